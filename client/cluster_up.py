"""A single-node cluster on this machine, as k3s's server runs one: ``podium up``
starts ``podium-scheduler`` (SQLite store) and a ``podium-agent`` joined to it in
the background; ``podium down`` stops both and removes the pods.

Where things are (each one a setting, so tests run isolated):

    <run_dir>/up/scheduler.pid, agent.pid   the daemons' PIDs
    <run_dir>/up/cluster.json               how they were started, for ``down``
    <run_dir>                               the agent's --root (runtime, netns, pods)
    <log_dir>/scheduler.log, agent.log      their output, appended
    <data>                                  the scheduler's database (kept by ``down``,
                                            so objects come back at the next ``up``)

A PID counts as ours only while ``/proc/PID/cmdline`` reads exactly the command we
started: a PID file left by a reboot never makes ``up`` believe, or ``down`` kill,
some other process.

The agent's SIGTERM leaves pods running on purpose (the next agent adopts them), so
``down`` removes them itself once the agent is gone: every pod the agent left on
disk goes the way the agent removes a leftover pod (``agent.recovery``), then the
node network (bridge, nftables table) goes with ``agent.network``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proto.podium.v1 import cluster_pb2

DEFAULT_DATA = Path("/var/lib/podium/scheduler")
DEFAULT_LOG_DIR = Path("/var/log/podium")
DEFAULT_RUN_DIR = Path("/run/podium")
DEFAULT_LISTEN = "127.0.0.1:7400"
DEFAULT_AGENT_LISTEN = "0.0.0.0:7401"
DEFAULT_BRIDGE = "podium0"
DEFAULT_CGROUP_PARENT = "podium"
DEFAULT_IMAGE_STORE = Path("/var/lib/podium/images")
DEFAULT_MANIFESTS = Path("/etc/podium/manifests")
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
LOG_LINES = 15  # of a failed daemon's log, shown with the error

Say = Callable[[str], None]


class UpError(Exception):
    """``up`` or ``down`` could not do its job; ``details`` is for the lines after."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class ClusterConfig:
    data: Path = DEFAULT_DATA
    listen: str = DEFAULT_LISTEN
    log_dir: Path = DEFAULT_LOG_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    agent_listen: str = DEFAULT_AGENT_LISTEN
    bridge: str = DEFAULT_BRIDGE
    cgroup_parent: str = DEFAULT_CGROUP_PARENT
    image_store: Path = DEFAULT_IMAGE_STORE
    manifests: Path = DEFAULT_MANIFESTS
    node_ip: str = ""
    # Run the agent in this network namespace (tests, nested set-ups): its bridge and
    # nftables table are made there, not in the host's namespace.
    netns: Path | None = None
    timeout: float = 30.0  # seconds ``up`` waits for the node to be Ready

    @property
    def agent_root(self) -> Path:
        return self.run_dir

    @property
    def node_name(self) -> str:
        from agent.cli import node_identity

        return node_identity("", self.bridge)[0]

    @property
    def nft_table(self) -> str:
        from agent.cli import node_identity

        return node_identity("", self.bridge)[1]


def state_dir(run_dir: Path) -> Path:
    return run_dir / "up"


@dataclass(frozen=True)
class Daemon:
    name: str  # "scheduler" or "agent": names its PID file and log
    argv: list[str]  # as /proc/PID/cmdline reads once it runs
    prefix: list[str] = field(default_factory=list)  # exec'd first (nsenter), then argv
    log: str = ""

    def pid_file(self, run_dir: Path) -> Path:
        return state_dir(run_dir) / f"{self.name}.pid"


def daemons(c: ClusterConfig) -> list[Daemon]:
    """The scheduler first, then the agent: ``down`` stops them in reverse."""
    scheduler = Daemon("scheduler", [sys.executable, "-m", "scheduler.cli",
                                     "--listen", c.listen, "--data", str(c.data)],
                       log=str(c.log_dir / "scheduler.log"))
    agent_argv = [sys.executable, "-m", "agent.cli", "--scheduler", c.listen,
                  "--listen", c.agent_listen, "--root", str(c.agent_root),
                  "--bridge", c.bridge, "--cgroup-parent", c.cgroup_parent,
                  "--image-store", str(c.image_store), "--manifests", str(c.manifests)]
    if c.node_ip:
        agent_argv += ["--node-ip", c.node_ip]
    prefix = ["nsenter", f"--net={c.netns}"] if c.netns is not None else []
    agent = Daemon("agent", agent_argv, prefix, log=str(c.log_dir / "agent.log"))
    return [scheduler, agent]


# Processes -------------------------------------------------------------------------


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def alive(pid: int) -> bool:
    """Running and not a zombie (a daemon re-parented to a subreaper that has not
    reaped it yet is gone all the same)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def is_ours(pid: int, argv: list[str]) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return alive(pid) and raw.rstrip(b"\0").split(b"\0") == [a.encode() for a in argv]


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT,
             child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; returns once the process is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if child is not None and child.poll() is not None:
                return
            if child is None and not alive(pid):
                return
            time.sleep(0.05)


def log_tail(path: Path, offset: int = 0, lines: int = LOG_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


# State -----------------------------------------------------------------------------


def load_config(run_dir: Path) -> ClusterConfig | None:
    """How the cluster under ``run_dir`` was started, or None if it was not."""
    try:
        raw = json.loads((state_dir(run_dir) / "cluster.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UpError(f"{state_dir(run_dir) / 'cluster.json'}: unreadable: {e}") from e
    for key in ("data", "log_dir", "run_dir", "image_store", "manifests"):
        raw[key] = Path(raw[key])
    raw["netns"] = Path(raw["netns"]) if raw.get("netns") else None
    return ClusterConfig(**raw)


def save_config(c: ClusterConfig) -> None:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(c).items()}
    path = state_dir(c.run_dir) / "cluster.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def running(c: ClusterConfig) -> dict[str, int]:
    """The daemons of ``c`` that run now, by name → PID."""
    found = {}
    for d in daemons(c):
        pid = read_pid(d.pid_file(c.run_dir))
        if pid is not None and is_ours(pid, d.argv):
            found[d.name] = pid
    return found


# up ----------------------------------------------------------------------------------


def up(c: ClusterConfig, say: Say = print) -> bool:
    """Start the cluster and wait until its node is Ready. False: it already ran
    (nothing started). A failure stops what this call started and raises UpError."""
    previous = load_config(c.run_dir)
    if previous is not None:
        now = running(previous)
        if len(now) == 2:
            say(f"podium is already running: scheduler at {previous.listen} "
                f"(pid {now['scheduler']}), agent pid {now['agent']}")
            return False
        if now:
            which = ", ".join(f"{n} pid {p}" for n, p in now.items())
            raise UpError(f"podium is partly running ({which}): run `podium down` first")
        # A cluster that died (reboot, kill -9): clear what it left before starting.
        _clean_node(previous, say)
    for directory in (state_dir(c.run_dir), c.log_dir, c.data, c.manifests):
        directory.mkdir(parents=True, exist_ok=True)
    save_config(c)
    started: list[tuple[Daemon, subprocess.Popen[bytes], int]] = []
    begun = time.time()
    try:
        for d in daemons(c):
            started.append(_start(d, c.run_dir))
        _wait_ready(c, started, begun)
    except BaseException:
        for d, proc, _ in reversed(started):
            stop_pid(proc.pid, child=proc)
            d.pid_file(c.run_dir).unlink(missing_ok=True)
        _clean_node(c, lambda _: None)
        (state_dir(c.run_dir) / "cluster.json").unlink(missing_ok=True)
        raise
    return True


def _start(d: Daemon, run_dir: Path) -> tuple[Daemon, subprocess.Popen[bytes], int]:
    log = Path(d.log)
    with open(log, "ab") as out:
        out.write(f"--- podium up, {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{' '.join(d.prefix + d.argv)}\n".encode())
        out.flush()
        offset = out.tell()
        proc = subprocess.Popen(d.prefix + d.argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out, cwd="/", start_new_session=True)
    d.pid_file(run_dir).write_text(f"{proc.pid}\n")
    return d, proc, offset


def _wait_ready(c: ClusterConfig, started: list[tuple[Daemon, subprocess.Popen[bytes], int]],
                begun: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc

    deadline = time.monotonic() + c.timeout
    channel = grpc.insecure_channel(c.listen)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        api = cluster_pb2_grpc.ClusterServiceStub(channel)
        serving = False
        while True:
            for d, proc, offset in started:
                code = proc.poll()
                if code is not None:
                    raise UpError(f"podium-{d.name} exited with code {code} "
                                  f"(log: {d.log})", log_tail(Path(d.log), offset))
            try:
                if not serving:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                elif _node_ready(api.List(cluster_pb2.ListRequest(kind="Node"), timeout=2),
                                 c.node_name, begun):
                    return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise UpError(f"the scheduler at {c.listen}: {e.code().name}: "
                                  f"{e.details()}") from None
            if time.monotonic() > deadline:
                d, _, offset = started[1 if serving else 0]
                what = f"node {c.node_name} Ready" if serving else f"the scheduler at {c.listen}"
                raise UpError(f"timed out after {c.timeout:g} s waiting for {what} "
                              f"(log: {d.log})", log_tail(Path(d.log), offset))
            time.sleep(0.1)
    finally:
        channel.close()


def _node_ready(reply: cluster_pb2.ListResponse, name: str, since: float) -> bool:
    """The node reports Ready by a heartbeat of this run (one stored before the
    scheduler restarted does not count)."""
    for item in reply.items:
        node = item.node
        if node.metadata.name != name:
            continue
        for cond in node.status.conditions:
            if (cond.type == "Ready" and cond.status == "True"
                    and cond.last_heartbeat_time.seconds >= int(since) - 1):
                return True
    return False


# down --------------------------------------------------------------------------------


def down(run_dir: Path = DEFAULT_RUN_DIR, say: Say = print,
         timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the cluster under ``run_dir`` and remove its pods and node network.
    False: nothing was there to stop (nothing is done)."""
    c = load_config(run_dir)
    if c is None:
        return False
    now = running(c)
    scheduler, agent = daemons(c)
    # The agent first, so nothing recreates the pods removed next; the scheduler
    # last, so the agent never sees it gone.
    _stop(agent, now.get("agent"), run_dir, timeout, say)
    _clean_node(c, say)
    _stop(scheduler, now.get("scheduler"), run_dir, timeout, say)
    (state_dir(run_dir) / "cluster.json").unlink(missing_ok=True)
    try:
        state_dir(run_dir).rmdir()
    except OSError:
        pass
    return True


def _stop(d: Daemon, pid: int | None, run_dir: Path, timeout: float, say: Say) -> None:
    if pid is not None:
        stop_pid(pid, timeout)
        say(f"stopped podium-{d.name} (pid {pid})")
    d.pid_file(run_dir).unlink(missing_ok=True)


def _clean_node(c: ClusterConfig, say: Say) -> None:
    """Remove every pod the agent left under its root, then the node's bridge,
    nftables tables and routes. The agent must not be running."""
    from agent.network import NetworkConfig, PodNetwork
    from agent.pods import RuntimeContainers, StoreImages
    from agent.recovery import pod_uid_of, pod_uids_on_disk, remove_leftover
    from agent.services import remove_node_services
    from runtime.api import Runtime
    from runtime.images import ImageStore

    root = c.agent_root
    rt = Runtime(root=root / "runtime", cgroup_parent=c.cgroup_parent)
    net_config = NetworkConfig(
        pod_cidr=_pod_cidr(root / "agent" / "network"), bridge=c.bridge,
        nft_table=c.nft_table, state_dir=root / "agent" / "network",
        netns_dir=root / "netns", pods_dir=root / "agent" / "pods", node_netns=c.netns)
    net = PodNetwork(net_config)
    containers = RuntimeContainers(rt)
    images = StoreImages(ImageStore(c.image_store))
    by_pod: dict[str, list[str]] = {}
    for state in rt.containers():
        uid = pod_uid_of(state.id)
        if uid is None:
            containers.remove(state.id)  # not a pod's: still ours, under our root
        else:
            by_pod.setdefault(uid, []).append(state.id)
    for uid in pod_uids_on_disk(root / "agent" / "pods", root / "netns"):
        by_pod.setdefault(uid, [])
    problems: list[str] = []
    for uid, ids in sorted(by_pod.items()):
        remove_leftover(uid, ids, containers=containers, images=images, sandbox=net,
                        pods_dir=root / "agent" / "pods", cgroup_parent=c.cgroup_parent,
                        log=problems.append)
    if by_pod:
        say(f"removed {len(by_pod)} pod{'s' if len(by_pod) != 1 else ''}")
    if c.netns is None or c.netns.exists():  # else the namespace took them with it
        net.teardown_node()
        remove_node_services(net_config)
    _remove_cgroup_parent(c.cgroup_parent, problems)
    for problem in problems:
        say(f"warning: {problem}")


def _remove_cgroup_parent(path: str, problems: list[str]) -> None:
    """The agent's cgroup parent, once no process is left in it: something else
    may share a parent such as "podium", and it is never killed for this."""
    from runtime.cgroups import detect

    try:
        parent = detect().cgroup(path)
        if parent.exists() and not parent.procs():
            parent.remove()
    except Exception as e:  # noqa: BLE001 - a leftover empty cgroup is only a warning
        problems.append(f"cgroup {path}: {e}")


def _pod_cidr(ipam_dir: Path) -> IPv4Network:
    """The node's pod CIDR, as its IPAM file names it (the scheduler assigned it)."""
    from agent.daemon import DEFAULT_STANDALONE_CIDR

    for path in sorted(ipam_dir.glob("ipam-*_*.json")) if ipam_dir.is_dir() else []:
        address, _, prefix = path.stem.removeprefix("ipam-").partition("_")
        try:
            return IPv4Network(f"{address}/{prefix}")
        except ValueError:
            continue
    return DEFAULT_STANDALONE_CIDR
