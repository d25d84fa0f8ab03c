#!/usr/bin/env bash
# Make a fresh Debian 12 / Ubuntu 24.04 machine a podium node. The Vagrantfile runs
# it on every VM; it works the same on any machine, as root:
#
#   deploy/provision.sh --role control --scheduler 192.168.56.10:7400 --node-name control
#   deploy/provision.sh --role worker  --scheduler 192.168.56.10:7400 --node-name worker-1 \
#       --node-ip 192.168.56.11
#
# Options:
#   --role control|worker   control runs podium-scheduler (and an agent unless --no-agent)
#   --scheduler HOST:PORT   where the agents reach the scheduler (control listens on PORT)
#   --node-name NAME        this node's name in the cluster
#   --node-ip IP            this node's address for other nodes (default: the agent's guess,
#                           the default route's source address)
#   --pod-cidr CIDR         ask for this pod CIDR (default: the scheduler assigns one)
#   --wheelhouse DIR        install podium offline from the wheels in DIR
#                           (podium-*.whl and its dependencies)
#   --source DIR            the project to install online from (default: this script's ..)
#   --no-agent              control only: no agent on this node
#   --eviction-timeout SEC  control only: seconds a NotReady node keeps its pods before
#                           they are replaced elsewhere (default: the scheduler's, 5)
#
# What it does: the Debian packages a node needs, a virtual environment in
# /opt/podium, the systemd units podium-scheduler.service (control) and
# podium-agent.service, IP forwarding and the overlay/br_netfilter modules, then
# enables and starts the units. Every argument is checked before anything changes.
# A second run with the same arguments changes nothing: files are written only when
# their content differs, and units restarted only then.
set -euo pipefail

PREFIX=/opt/podium
UNIT_DIR=/etc/systemd/system
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Run-time needs of a node: Python's venv, the network tools the agent drives, kmod for
# modprobe, and busybox-static for `make busybox-image`-style base images.
RUNTIME_PACKAGES=(python3-venv iproute2 nftables procps kmod busybox-static)
# Only to install from the package index: python-prctl comes as source and compiles
# against libcap. (The Makefile's test tools — runc, crun, skopeo, docker-registry —
# are for the test suite, not for a node.)
BUILD_PACKAGES=(python3-dev gcc libcap-dev libseccomp-dev)

die() { echo "provision.sh: $*" >&2; exit 2; }
say() { echo "provision: $*"; }

role="" scheduler="" node_name="" node_ip="" pod_cidr="" wheelhouse="" source_dir="" agent=1
eviction=""
while [ $# -gt 0 ]; do
    opt="$1"
    case "$opt" in
        --no-agent) agent=0; shift; continue ;;
        --role|--scheduler|--node-name|--node-ip|--pod-cidr|--wheelhouse|--source|\
        --eviction-timeout)
            [ $# -ge 2 ] || die "$opt needs a value"
            val="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;/^set -euo/d'; exit 0 ;;
        *) die "unknown argument '$opt' (see --help)" ;;
    esac
    case "$opt" in
        --role) role="$val" ;;
        --scheduler) scheduler="$val" ;;
        --node-name) node_name="$val" ;;
        --node-ip) node_ip="$val" ;;
        --pod-cidr) pod_cidr="$val" ;;
        --wheelhouse) wheelhouse="$val" ;;
        --source) source_dir="$val" ;;
        --eviction-timeout) eviction="$val" ;;
    esac
done

ipv4='((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
[ -n "$role" ] || die "missing --role (control or worker)"
case "$role" in control|worker) ;; *) die "--role '$role': must be control or worker" ;; esac
[ -n "$scheduler" ] || die "missing --scheduler HOST:PORT"
[[ "$scheduler" =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:([0-9]{1,5})$ ]] \
    && [ "${BASH_REMATCH[2]}" -ge 1 ] && [ "${BASH_REMATCH[2]}" -le 65535 ] \
    || die "--scheduler '$scheduler': expected HOST:PORT, e.g. 192.168.56.10:7400"
port="${scheduler##*:}"
[ -n "$node_name" ] || die "missing --node-name NAME"
[[ "$node_name" =~ ^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$ ]] \
    || die "--node-name '$node_name': lower-case letters, digits, '-' and '.' (a DNS name)"
[ -z "$node_ip" ] || [[ "$node_ip" =~ ^${ipv4}$ ]] \
    || die "--node-ip '$node_ip': not an IPv4 address"
if [ -n "$pod_cidr" ]; then
    [[ "$pod_cidr" =~ ^${ipv4}/([0-9]{1,2})$ ]] && [ "${BASH_REMATCH[4]}" -le 32 ] \
        || die "--pod-cidr '$pod_cidr': not an IPv4 CIDR such as 10.88.1.0/24"
fi
if [ -n "$wheelhouse" ]; then
    [ -d "$wheelhouse" ] || die "--wheelhouse '$wheelhouse': no such directory"
    compgen -G "$wheelhouse/podium-*.whl" >/dev/null \
        || die "--wheelhouse '$wheelhouse': holds no podium-*.whl (build it with pip wheel)"
    wheelhouse="$(cd "$wheelhouse" && pwd)"
else
    source_dir="${source_dir:-$HERE/..}"
    [ -f "$source_dir/pyproject.toml" ] && [ -d "$source_dir/agent" ] \
        || die "--source '$source_dir': not podium's source tree (no pyproject.toml, agent/)"
    source_dir="$(cd "$source_dir" && pwd)"
fi
[ -n "$source_dir" ] && [ -n "$wheelhouse" ] && die "--source and --wheelhouse: give one"
[ "$agent" = 1 ] || [ "$role" = control ] || die "--no-agent: only for --role control"
if [ -n "$eviction" ]; then
    [[ "$eviction" =~ ^[0-9]+(\.[0-9]+)?$ ]] \
        || die "--eviction-timeout '$eviction': not a number of seconds"
    [ "$role" = control ] || die "--eviction-timeout: only for --role control"
fi
[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and systemd units)"
command -v apt-get >/dev/null && command -v systemctl >/dev/null \
    || die "needs apt-get and systemd (Debian or Ubuntu)"
for f in podium-scheduler.service podium-agent.service; do
    [ -f "$HERE/systemd/$f" ] || die "missing unit template $HERE/systemd/$f"
done

# ---- from here on, things change; each step only when needed -------------------------
changes=0

# install_file DEST MODE: stdin becomes DEST if different; returns 0 when it changed.
install_file() {
    local dest="$1" mode="$2" tmp
    tmp="$(mktemp)"
    cat >"$tmp"
    if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        return 1
    fi
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$tmp" "$dest"
    rm -f "$tmp"
    say "wrote $dest"
    changes=$((changes + 1))
    return 0
}

packages=("${RUNTIME_PACKAGES[@]}")
[ -n "$wheelhouse" ] || packages+=("${BUILD_PACKAGES[@]}")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    changes=$((changes + 1))
fi

# The virtual environment, and podium in it. A stamp of what was installed (the
# wheel's or the source tree's hash) tells whether this run brings anything new.
fresh=0
pip_wheel=""
[ -z "$wheelhouse" ] || pip_wheel="$(compgen -G "$wheelhouse/pip-*.whl" | tail -n 1)" || true
if [ ! -x "$PREFIX/bin/python" ]; then
    say "creating $PREFIX"
    if [ -n "$pip_wheel" ]; then
        # pip from the wheelhouse (run from its wheel) installs itself with the rest:
        # quicker than ensurepip, which byte-compiles pip and setuptools first.
        python3 -m venv --without-pip "$PREFIX"
    else
        python3 -m venv "$PREFIX"
    fi
    fresh=1
    changes=$((changes + 1))
fi
if [ -n "$wheelhouse" ]; then
    stamp="wheel $(sha256sum "$wheelhouse"/podium-*.whl | sha256sum | cut -c1-32)"
else
    stamp="source $(cd "$source_dir" && find runtime agent scheduler client proto \
        pyproject.toml -type f \( -name '*.py' -o -name '*.pyi' -o -name '*.proto' \
        -o -name '*.toml' -o -name py.typed \) -not -path '*/__pycache__/*' -print0 \
        | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)"
fi
podium_changed=0
if [ "$(cat "$PREFIX/.podium-installed" 2>/dev/null)" != "$stamp" ]; then
    # No byte-compiling now: the services (as root) write each module's cache when they
    # first import it, and provisioning is quicker.
    pip=("$PREFIX/bin/python" -m pip --disable-pip-version-check -q)
    if [ ! -x "$PREFIX/bin/pip" ] && [ -n "$pip_wheel" ]; then
        pip=("$PREFIX/bin/python" "$pip_wheel/pip" --disable-pip-version-check -q)
    fi
    install=(install --no-compile)
    # Same version number, new code: an existing venv needs podium itself reinstalled.
    again=(install --no-compile --no-deps --force-reinstall)
    if [ -n "$wheelhouse" ]; then
        say "installing podium from $wheelhouse"
        extra=()
        [ -z "$pip_wheel" ] || extra=(pip)
        "${pip[@]}" "${install[@]}" --no-index --find-links "$wheelhouse" podium "${extra[@]}"
        [ "$fresh" = 1 ] \
            || "${pip[@]}" "${again[@]}" --no-index --find-links "$wheelhouse" podium
    else
        # Build from a copy: the synced folder may be read-only, and a build in place
        # would leave build/ and *.egg-info in the user's tree.
        copy="$(mktemp -d)"
        trap 'rm -rf "$copy"' EXIT
        (cd "$source_dir" && tar cf - --exclude=__pycache__ --exclude='*.egg-info' \
            runtime agent scheduler client proto pyproject.toml README.md) | tar xf - -C "$copy"
        say "installing podium from $source_dir (dependencies from the package index)"
        "${pip[@]}" "${install[@]}" "$copy"
        [ "$fresh" = 1 ] || "${pip[@]}" "${again[@]}" "$copy"
    fi
    echo "$stamp" >"$PREFIX/.podium-installed"
    podium_changed=1
    changes=$((changes + 1))
fi
for cmd in podium podium-agent podium-scheduler podium-runtime; do
    if [ "$(readlink "/usr/local/bin/$cmd" 2>/dev/null)" != "$PREFIX/bin/$cmd" ]; then
        ln -sfn "$PREFIX/bin/$cmd" "/usr/local/bin/$cmd"
        changes=$((changes + 1))
    fi
done

# Kernel prerequisites: overlayfs for container roots; br_netfilter so traffic
# between pods on one bridge passes nftables (Service rules); IP forwarding for
# pod traffic between nodes over the host-gw routes.
install_file /etc/modules-load.d/podium.conf 0644 <<'EOF' || true
overlay
br_netfilter
EOF
for m in overlay br_netfilter; do
    if [ ! -d "/sys/module/$m" ]; then
        modprobe "$m" || die "cannot load kernel module $m"
        changes=$((changes + 1))
    fi
done
install_file /etc/sysctl.d/90-podium.conf 0644 <<'EOF' || true
# podium: pods reach other nodes' pods through this node (host-gw routes).
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
EOF
if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ] \
        || [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" != 1 ]; then
    sysctl -q -p /etc/sysctl.d/90-podium.conf
    changes=$((changes + 1))
fi

# The units, rendered from deploy/systemd/.
render() {
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@LISTEN@|0.0.0.0:$port|g" \
        -e "s|@SCHEDULER@|$scheduler|g" -e "s|@NODE_NAME@|$node_name|g" \
        -e "s|@AGENT_ARGS@|$agent_args|g" -e "s|@SCHEDULER_ARGS@|$scheduler_args|g" \
        -e "s|@AFTER@|$after|g" "$HERE/systemd/$1"
}
# The agent's static pod directory (its default --manifests): present, so an agent
# reads it as empty rather than as missing.
if [ "$agent" = 1 ] && [ ! -d /etc/podium/manifests ]; then
    mkdir -p /etc/podium/manifests
    changes=$((changes + 1))
fi
agent_args=""
scheduler_args=""
[ -z "$eviction" ] || scheduler_args+=" --eviction-timeout $eviction"
[ -z "$node_ip" ] || agent_args+=" --node-ip $node_ip"
[ -z "$pod_cidr" ] || agent_args+=" --pod-cidr $pod_cidr"
after=""
[ "$role" = control ] && after="podium-scheduler.service"
units=()
[ "$role" = control ] && units+=(podium-scheduler.service)
[ "$agent" = 1 ] && units+=(podium-agent.service)
changed_units=()
for unit in "${units[@]}"; do
    if render "$unit" | install_file "$UNIT_DIR/$unit" 0644; then
        changed_units+=("$unit")
    fi
done
# (install_file ran in a pipeline's subshell: count its changes here.)
changes=$((changes + ${#changed_units[@]}))
[ ${#changed_units[@]} -eq 0 ] || systemctl daemon-reload
for unit in "${units[@]}"; do
    if ! systemctl is-enabled -q "$unit" 2>/dev/null; then
        systemctl enable -q "$unit"
        changes=$((changes + 1))
    fi
    if [[ " ${changed_units[*]} " == *" $unit "* ]] || [ "$podium_changed" = 1 ]; then
        # Restarting the agent leaves its pods running (KillMode=process): see the unit.
        systemctl restart "$unit"
        say "restarted $unit"
    elif ! systemctl is-active -q "$unit"; then
        systemctl start "$unit"
        say "started $unit"
        changes=$((changes + 1))
    fi
done

if [ "$changes" = 0 ]; then
    say "$node_name is up to date: nothing changed"
else
    say "$node_name ($role) provisioned: $changes change(s)"
fi
