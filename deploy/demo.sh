#!/usr/bin/env bash
# podium's demo: a one-node cluster (`podium up`), a Deployment of three web
# servers behind a Service reached by name, what happens when a container dies
# or a pod is deleted, then `podium down`. Run through `sudo make demo` (which sets up .venv first).
#
# Everything lives in a temporary directory and goes when the demo ends; the
# environment can move it (the tests do): PODIUM_DEMO_BRIDGE, PODIUM_DEMO_CGROUP,
# PODIUM_DEMO_NETNS (run the agent in that network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
PODIUM=".venv/bin/podium"
PY=".venv/bin/python"
work=$(mktemp -d /tmp/podium-demo-XXXXXX)
bridge="${PODIUM_DEMO_BRIDGE:-podiumdemo0}"
cgroup="${PODIUM_DEMO_CGROUP:-podium-demo}"
export PODIUM_SERVER="unix:$work/scheduler.sock"
up_args=(--data "$work/data" --run-dir "$work/run" --log-dir "$work/log"
         --listen "$PODIUM_SERVER" --agent-listen "unix:$work/agent.sock"
         --bridge "$bridge" --cgroup-parent "$cgroup" --image-store "$work/images"
         --manifests "$work/manifests")
if [ -n "${PODIUM_DEMO_NETNS:-}" ]; then up_args+=(--netns "$PODIUM_DEMO_NETNS"); fi
cleanup() {
    local status=$?
    if [ "$status" != 0 ]; then  # show why before the logs go with the directory
        for log in "$work"/log/*.log; do
            [ -f "$log" ] && { echo "--- the end of $log:"; tail -n 25 "$log"; } >&2
        done
    fi
    "$PODIUM" down --run-dir "$work/run" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "An image: busybox from Debian's busybox-static, imported into the node's store"
"$PY" -m runtime.images.bases "$work/rootfs" >/dev/null
tar -C "$work/rootfs" -cf "$work/busybox.tar" .
run "$PODIUM" --store "$work/images" image import "$work/busybox.tar" busybox:demo

step "A cluster on this machine: the scheduler and one agent"
run "$PODIUM" up "${up_args[@]}"
run "$PODIUM" get nodes

step "Three web servers, each answering with its own pod's name"
cat > "$work/hello.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: 3
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: busybox:demo
        command: ["sh", "-c", "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports:
        - containerPort: 8080
YAML
cat "$work/hello.yaml"
run "$PODIUM" apply -f "$work/hello.yaml"
run "$PODIUM" rollout status deployment/hello --timeout 60s
run "$PODIUM" get pods -o wide

pods=($("$PODIUM" get pods -l app=hello -o name | sed 's|^pod/||'))
ips=($("$PODIUM" get pods -l app=hello -o json | "$PY" -c '
import json, sys
doc = json.load(sys.stdin)
for item in doc.get("items", [doc]):
    print(item["status"]["podIP"])'))

step "Pods reach each other: from ${pods[0]}, a request to every pod's address"
for ip in "${ips[@]}"; do
    run "$PODIUM" exec "${pods[0]}" -- wget -qO- "http://$ip:8080/"
done

step "A Service: one stable address and name for the three, spread by the kernel (nftables)"
cat > "$work/hello-svc.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: hello
spec:
  selector: {app: hello}
  ports:
  - port: 80
    targetPort: 8080
YAML
cat "$work/hello-svc.yaml"
run "$PODIUM" apply -f "$work/hello-svc.yaml"
run "$PODIUM" get services
for _ in $(seq 50); do
    [ "$("$PODIUM" get endpoints hello -o json | "$PY" -c '
import json, sys
print(sum(len(s.get("addresses", [])) for s in json.load(sys.stdin).get("subsets", [])))')" -eq 3 ] && break
    sleep 0.2
done
run "$PODIUM" get endpoints hello
echo "From ${pods[0]}, by name through the cluster DNS (10.96.0.10), six requests:"
for _ in 1 2 3 4 5 6; do
    run "$PODIUM" exec "${pods[0]}" -- wget -qO- http://hello/
done

step "A container dies (SIGKILL from outside): its agent starts it again"
victim="${pods[1]}"
uid=$("$PODIUM" get pod "$victim" -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["uid"])')
container=$(.venv/bin/podium-runtime --root "$work/run/runtime" list --format json | "$PY" -c '
import json, sys
uid = sys.argv[1]
print(next(c["id"] for c in json.load(sys.stdin) if c["id"].startswith(uid) and c["status"] == "running"))' "$uid")
run .venv/bin/podium-runtime --root "$work/run/runtime" kill "$container" KILL
for _ in $(seq 50); do
    restarts=$("$PODIUM" get pod "$victim" -o json | "$PY" -c '
import json, sys
pod = json.load(sys.stdin)
statuses = pod.get("status", {}).get("containerStatuses", [])
running = statuses and "running" in statuses[0].get("state", {})
print(statuses[0].get("restartCount", 0) if running else 0)')
    [ "$restarts" -ge 1 ] && break
    sleep 0.2
done
run "$PODIUM" get pods

step "A pod is deleted: its Deployment puts a new one in its place"
run "$PODIUM" delete pod "${pods[2]}"
run "$PODIUM" rollout status deployment/hello --timeout 60s
for _ in $(seq 50); do
    [ "$("$PODIUM" get pods -l app=hello -o name | wc -l)" -eq 3 ] && break
    sleep 0.2
done
run "$PODIUM" get pods -o wide

step "podium down: the cluster stops, and its pods, bridge and cgroups go with it"
run "$PODIUM" down --run-dir "$work/run"
echo
echo "Done. Next: sudo .venv/bin/podium up, then podium apply -f your.yaml"
