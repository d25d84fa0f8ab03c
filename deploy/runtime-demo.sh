#!/usr/bin/env bash
# podium's demo: a busybox container started by podium-runtime, and what it can see.
# Run through `sudo make demo` (which sets up .venv first). Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
RT=".venv/bin/podium-runtime"
PY=".venv/bin/python"
work=$(mktemp -d /tmp/podium-demo-XXXXXX)
state="$work/state"
id="demo-$$"
cleanup() {
    "$RT" --root "$state" delete --force "$id" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A busybox root filesystem, from Debian's busybox-static"
"$PY" -m runtime.images.bases "$work/bundle/rootfs" >/dev/null
echo "$work/bundle/rootfs: $(ls "$work/bundle/rootfs" | tr '\n' ' ')"

step "An OCI bundle: podium-runtime spec writes config.json"
(cd "$work/bundle" && "$OLDPWD/$RT" spec)
"$PY" - "$work/bundle/config.json" <<'PYEOF'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["hostname"] = "podium-demo"
config["process"]["args"] = ["sh", "-c", """
echo "hostname:      $(hostname)"
echo "my pid:        $$ (PID 1 of its own PID namespace)"
echo "processes:     $(ps -o pid,comm | tail -n +2 | tr -s ' ' | tr '\\n' ' ')"
echo "network:       $(ls /sys/class/net | tr '\\n' ' ')(only loopback)"
echo "user:          $(id)"
echo "no_new_privs:  $(grep NoNewPrivs /proc/self/status | tr -d '\\t' | cut -d: -f2)"
mount -t tmpfs none /mnt 2>/dev/null && echo "mount:         allowed (!)" || echo "mount:         refused (no CAP_SYS_ADMIN)"
echo "/proc/timer_list: $(cat /proc/timer_list | wc -c) bytes (masked; the host's has $HOST_TIMER_LIST)"
touch /etc/x 2>/dev/null && echo "root fs:       writable" || echo "root fs:       read-only"
"""]
config["process"]["env"].append(f"HOST_TIMER_LIST={len(open('/proc/timer_list').read())}")
config["linux"]["resources"] = {"memory": {"limit": 64 * 1024 * 1024}, "pids": {"limit": 64}}
json.dump(config, open(path, "w"), indent=2)
PYEOF
echo "process: sh -c '...'; limits: 64 MiB of memory, 64 processes"

step "podium-runtime run: the container's view of the world"
"$RT" --root "$state" run --bundle "$work/bundle" "$id"

step "The host's view, for comparison"
echo "hostname:      $(hostname)"
echo "processes:     $(ls /proc | grep -c '^[0-9]') visible"
echo "network:       $(ls /sys/class/net | tr '\n' ' ')"

step "create / start / state / kill / delete, as runc's callers drive it"
"$PY" - "$work/bundle/config.json" <<'PYEOF'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["sleep", "300"]
json.dump(config, open(path, "w"), indent=2)
PYEOF
"$RT" --root "$state" run --detach --bundle "$work/bundle" "$id"
"$RT" --root "$state" state "$id"
"$RT" --root "$state" ps "$id"
"$RT" --root "$state" events --stats "$id" | grep -E '"(memory_current|memory_limit|pids_current|pids_limit)"'
"$RT" --root "$state" kill "$id" KILL
sleep 0.3
echo "status after kill: $("$RT" --root "$state" state "$id" | grep '"status"')"
"$RT" --root "$state" delete "$id"
"$RT" --root "$state" list
echo
echo "Done: the container, its cgroup and its state are gone."
