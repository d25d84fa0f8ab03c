"""Pods per node and pod start latency: N busybox pods on one podium-agent.

    sudo .venv/bin/python bench/agent_pods.py [--n 100] [--rate PODS_PER_S]

One agent runs (``nsenter --net``) inside a network namespace the bench makes and
removes (``ptbench``, under a temporary directory), so its bridge, veths and
nftables table never touch the host's network. Its root, image store and manifest
directory are temporary (the root a tmpfs, as its default /run/podium is on a
node), its cgroup parent is ``podium-bench-agent``, and it listens on a unix
socket. The busybox image is imported into its store first.

Phase 1, a burst: N single-container pods (``sleep 3600``) are started at once: one
manifest file each, written to a hidden temporary name and renamed into place (the
agent skips hidden files, so it never reads half a file). ListPods is polled every
~20 ms; a pod's start latency is from its rename to the first ListPods answer that
shows it ``Running``. ``pods_per_s`` is N over the time from the first rename to the
last pod Running; ``agent_cpu_ms_per_pod`` is the CPU time (user and system) the
agent and its fork server spent meanwhile, over N. Memory overhead: see
``overhead_pss``. Then every manifest is removed and the bench waits until ListPods
is empty, and waits 3 s more (the kernel frees the burst's network namespaces in the
background, after their pods are gone).

Phase 2, one after another: N pods again, each manifest written once the previous
pod is Running (ListPods polled every ~10 ms), so the N-th starts beside N-1
running pods: ``sequential_pod_start_*`` is a pod's own start latency at a density
growing to N, without the queueing behind the other pods of a burst. Its manifests
are removed again, and the bench waits 3 s more.

Phase 3, paced: N pods again, one manifest every 1/rate seconds on a fixed schedule
(open loop: a manifest is written when its time comes, whether or not the earlier
pods are Running yet), as Kubernetes' density and load tests create pods at a fixed
rate and hold their start latency to the SLO. ListPods is polled every ~10 ms
between arrivals; ``paced_pod_start_*`` is from each pod's own rename to Running.
The rate is ``--rate`` when given, else half of ``pods_per_s`` measured by this
run's burst: a load the node can sustain, whatever the machine, so the figures show
a pod's latency under steady arrivals rather than a queue that grows without end
(above the node's throughput) or no overlap at all (the sequential phase). Its
manifests are removed at the end, as the others.

The targets (issue 4: p50 under 100 ms, p99 under 500 ms, at most 2 MiB of overhead
per pod) are checked against what was measured, for each figure: ``targets_met``.
A burst of 100 pods cannot meet the latency targets on a 2-core node: at a few
tens of milliseconds of work per pod, the last pod of the burst waits for the 99
before it. The sequential and paced figures are the ones the latency targets can be
held to.

At the end the bench stops the agent with SIGTERM, kills by PID anything of it still
alive, and removes the network namespace, the temporary directory and the cgroups.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import psutil  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from agent.network import create_netns, remove_netns  # noqa: E402
from proto.podium.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
from runtime.api import Runtime  # noqa: E402
from runtime.images import ImageStore, import_rootfs  # noqa: E402
from runtime.images.bases import busybox_rootfs  # noqa: E402
from runtime.processes import reap_children  # noqa: E402
from tests.support.nodes import mount_state_tmpfs, unmount_state_tmpfs  # noqa: E402

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "podium-bench-agent"
IMAGE = "podium-bench/busybox:agent"
POLL = 0.02  # seconds between ListPods calls in the burst
SEQUENTIAL_POLL = 0.01  # one after another and paced, where latencies are tens of ms
# The paced phase's default rate, as a fraction of the burst's pods/s: at half the
# throughput the node has room to spare, so pods overlap without a growing queue.
PACED_FRACTION = 0.5
# Between the phases: the kernel frees the burst's network namespaces after their
# pods are gone, in the background; the second phase should not measure that.
SETTLE = 3.0
MIB = 1024 * 1024
TARGETS = {"p50_ms": 100.0, "p99_ms": 500.0, "mib_per_pod": 2.0}
# Each figure held to a target: (limit, whether the limit itself passes, unit).
FIGURE_TARGETS: dict[str, tuple[float, bool, str]] = {
    "pod_start_p50_ms": (TARGETS["p50_ms"], False, "ms"),
    "pod_start_p99_ms": (TARGETS["p99_ms"], False, "ms"),
    "overhead_mib_per_pod": (TARGETS["mib_per_pod"], True, "MiB"),
    **{f"{phase}_pod_start_{p}_ms": (TARGETS[f"{p}_ms"], False, "ms")
       for phase in ("sequential", "paced") for p in ("p50", "p99")},
}

MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sleep", "3600"]
"""


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Node:
    work: Path
    proc: subprocess.Popen[bytes] | None = None
    stub: Any = None  # agent_pb2_grpc.AgentServiceStub
    channel: grpc.Channel | None = None
    # Every shim and container init PID seen, to kill by PID if anything outlives the run.
    seen_pids: set[int] = field(default_factory=set)

    @property
    def netns(self) -> Path:
        return self.work / "ptbench"

    @property
    def root(self) -> Path:
        return self.work / "root"

    @property
    def manifests(self) -> Path:
        return self.work / "manifests"

    @property
    def sock(self) -> Path:
        return self.work / "agent.sock"

    @property
    def log_path(self) -> Path:
        return self.work / "agent.log"

    @property
    def runtime(self) -> Runtime:
        return Runtime(root=self.root / "runtime", cgroup_parent=CGROUP_PARENT)

    def prepare(self) -> None:
        create_netns(self.netns)
        mount_state_tmpfs(self.root)
        self.manifests.mkdir()
        store = ImageStore(self.work / "images")
        rootfs, tarball = self.work / "rootfs", self.work / "busybox.tar"
        busybox_rootfs(rootfs)
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        import_rootfs(store, tarball, IMAGE)
        shutil.rmtree(rootfs)
        tarball.unlink()

    def start(self) -> None:
        argv = ["nsenter", f"--net={self.netns}", sys.executable, "-m", "agent.cli",
                "--manifests", str(self.manifests), "--listen", f"unix:{self.sock}",
                "--root", str(self.root), "--pod-cidr", "10.88.77.0/24",
                "--bridge", "ptbr0", "--cgroup-parent", CGROUP_PARENT,
                "--node-name", "ptbench", "--image-store", str(self.work / "images")]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log)
        self.channel = grpc.insecure_channel(f"unix:{self.sock}")
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 30
        while True:
            self.check_alive()
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(
                    service="podium.v1.AgentService"), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
            if time.monotonic() > deadline:
                self.fail("the agent did not become SERVING within 30 s")
            time.sleep(0.05)

    def list_pods(self) -> list[Any]:
        return list(self.stub.ListPods(agent_pb2.ListPodsRequest(), timeout=10).pods)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.fail(f"the agent exited with {self.proc.returncode}")

    def fail(self, why: str) -> None:
        tail = self.log_path.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"agent_pods: {why}; agent log (last lines):\n" + "\n".join(tail))

    def cpu_seconds(self) -> float:
        """User and system CPU time of the agent and its fork server (not the shims)."""
        total = 0.0
        for pid in self.agent_pids():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def agent_pids(self) -> list[int]:
        """The agent and its children: its fork server (the shims are the server's
        children, and counted apart)."""
        assert self.proc is not None
        agent = psutil.Process(self.proc.pid)
        return [agent.pid, *(p.pid for p in agent.children())]

    def shim_pids(self, pods: Iterable[Any]) -> list[int]:
        """The shims of the pods' containers: the parents of the containers' inits.

        A shim is the agent's fork server's child while the server runs, and is
        re-parented to the nearest subreaper (this bench, see ``main``) once the
        server is gone; the server also has helpers of its own. So each container's
        init PID comes from the runtime's state (the container ID from ListPods),
        and the shim is that init's parent, as the shim is a child subreaper that
        forks the init.
        """
        rt, shims = self.runtime, []
        for pod in pods:
            for cs in pod.status.container_statuses:
                init = rt.state(cs.container_id.removeprefix("podium://")).pid
                shim = psutil.Process(init).ppid()
                self.seen_pids.update((init, shim))
                shims.append(shim)
        return shims


def pss(pids: Iterable[int]) -> int:
    return sum(psutil.Process(pid).memory_full_info().pss for pid in pids)


def write_manifest(directory: Path, name: str) -> None:
    tmp = directory / f".{name}.yaml.tmp"  # hidden: the agent skips it
    tmp.write_text(MANIFEST.format(name=name, image=IMAGE))
    os.rename(tmp, directory / f"{name}.yaml")


def poll_running(node: Node, running: dict[str, float], deadline: float,
                 late: str) -> list[Any]:
    """One ListPods: the time each pod is first seen Running goes into ``running``;
    past ``deadline`` the bench fails, saying ``late`` and the pods' commonest phase."""
    node.check_alive()
    pods = node.list_pods()
    now = time.monotonic()
    for pod in pods:
        if pod.status.phase == "Running" and pod.metadata.name not in running:
            running[pod.metadata.name] = now
    if now > deadline:
        phases = statistics.multimode(p.status.phase for p in pods) if pods else []
        node.fail(f"{late} (most common phase: {phases})")
    return pods


def start_pods(node: Node, n: int, timeout: float) -> tuple[dict[str, float], float, list[Any]]:
    """Write n manifests, poll until all are Running; latencies (s), wall time, pods."""
    names = [f"bench-{i:03d}" for i in range(n)]
    appeared: dict[str, float] = {}
    for name in names:
        write_manifest(node.manifests, name)
        appeared[name] = time.monotonic()
    running: dict[str, float] = {}
    pods: list[Any] = []
    deadline = appeared[names[0]] + timeout
    while len(running) < n:
        time.sleep(POLL)
        pods = poll_running(node, running, deadline,
                            f"{len(running)}/{n} pods Running after {timeout:.0f} s")
    latency = {name: running[name] - appeared[name] for name in names}
    return latency, max(running.values()) - appeared[names[0]], pods


def start_pods_one_by_one(node: Node, n: int, timeout: float) -> dict[str, float]:
    """Write n manifests, each once the previous pod is Running; latencies (s)."""
    latency: dict[str, float] = {}
    for i in range(n):
        name = f"seq-{i:03d}"
        write_manifest(node.manifests, name)
        appeared = time.monotonic()
        while True:
            time.sleep(SEQUENTIAL_POLL)
            node.check_alive()
            pods = node.list_pods()
            now = time.monotonic()
            if any(p.metadata.name == name and p.status.phase == "Running" for p in pods):
                latency[name] = now - appeared
                break
            if now - appeared > timeout:
                node.fail(f"pod {name} not Running {timeout:.0f} s after its manifest "
                          f"({i} pods running beside it)")
        node.shim_pids(p for p in pods if p.metadata.name == name)  # seen, for cleanup
    return latency


def start_pods_paced(node: Node, n: int, rate: float,
                     timeout: float) -> tuple[dict[str, float], float]:
    """Write n manifests on a fixed schedule, rate per second, polling ListPods
    between arrivals; latencies (s), and the latest any write came after its time.

    Open loop: manifest i is due at i / rate after the first, whatever the earlier
    pods are doing. A write may come a little late (a ListPods call in progress);
    its latency still counts from its own rename, and the schedule does not slip."""
    names = [f"paced-{i:03d}" for i in range(n)]
    appeared: dict[str, float] = {}
    running: dict[str, float] = {}
    pods: list[Any] = []
    late = 0.0
    began = time.monotonic()
    deadline = began + n / rate + timeout
    while len(running) < n:
        while len(appeared) < n and time.monotonic() >= began + len(appeared) / rate:
            due = began + len(appeared) / rate
            name = names[len(appeared)]
            write_manifest(node.manifests, name)
            appeared[name] = time.monotonic()
            late = max(late, appeared[name] - due)
        pods = poll_running(node, running, deadline,
                            f"{len(running)}/{n} paced pods Running {timeout:.0f} s after "
                            "the last was due")
        due = began + len(appeared) / rate if len(appeared) < n else math.inf
        time.sleep(max(0.0, min(SEQUENTIAL_POLL, due - time.monotonic())))
    node.shim_pids(pods)  # seen, for cleanup
    return {name: running[name] - appeared[name] for name in names}, late


def remove_pods(node: Node, timeout: float) -> float:
    began = time.monotonic()
    for f in node.manifests.iterdir():
        f.unlink()
    while node.list_pods():
        node.check_alive()
        if time.monotonic() - began > timeout:
            node.fail(f"pods still listed {timeout:.0f} s after their manifests went")
        time.sleep(0.1)
    return time.monotonic() - began


def cgroup_dirs() -> list[Path]:
    """Every cgroup at or under CGROUP_PARENT, deepest first, in every hierarchy."""
    found: list[Path] = []
    for hierarchy in [CGROUP_ROOT, *CGROUP_ROOT.iterdir()]:
        parent = hierarchy / CGROUP_PARENT
        if parent.is_dir():
            found.extend(Path(d) for d, _, _ in os.walk(parent))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass




def cleanup(node: Node) -> list[str]:
    """Stop and remove everything; warnings for what had to be forced."""
    warnings: list[str] = []
    if node.channel is not None:
        node.channel.close()
    if node.proc is not None and node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            warnings.append("the agent ignored SIGTERM for 20 s: killed")
            node.proc.kill()
            node.proc.wait()
    # Anything still alive of the pods, by PID: what was seen, and what the cgroups hold.
    left = {pid for pid in node.seen_pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}
    for d in cgroup_dirs():
        procs = d / "cgroup.procs"
        if procs.exists():
            left.update(int(p) for p in procs.read_text().split())
    if left:
        warnings.append(f"killed {len(left)} processes left after the agent stopped")
        kill_pids(left)
        time.sleep(0.2)
    reap_children()
    rt = node.runtime
    if (node.root / "runtime").is_dir():
        for state in rt.containers():
            warnings.append(f"container {state.id} left: force-deleted")
            rt.delete(state.id, force=True)
    netns_dir = node.root / "netns"
    for name in os.listdir(netns_dir) if netns_dir.is_dir() else []:
        warnings.append(f"pod network namespace {name} left: removed")
        remove_netns(netns_dir / name)
    remove_netns(node.netns)
    for d in cgroup_dirs():
        try:
            d.rmdir()
        except OSError as e:
            warnings.append(f"could not remove cgroup {d}: {e.strerror}")
    unmount_state_tmpfs(node.root)
    work = str(node.work)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for target in sorted((m for m in mounts if m.startswith(work)), key=len, reverse=True):
        warnings.append(f"mount {target} left: unmounted")
        subprocess.run(["umount", "-l", target], check=False)
    shutil.rmtree(node.work, ignore_errors=True)
    return warnings


def targets_met(figures: dict[str, float]) -> dict[str, bool]:
    """Each figure against its target in issue 4, as measured (never assumed)."""
    return {name: figures[name] <= limit if inclusive else figures[name] < limit
            for name, (limit, inclusive, _) in FIGURE_TARGETS.items()}


def target_text(name: str) -> str:
    """A figure's target as the table prints it ("< 100 ms"), or "" without one."""
    if name not in FIGURE_TARGETS:
        return ""
    limit, inclusive, unit = FIGURE_TARGETS[name]
    return f"{'<=' if inclusive else '<'} {limit:.0f} {unit}"


@dataclass
class Paced:
    """The paced phase: its latencies (s), rate (pods/s), where the rate came from,
    and the latest any manifest was written after its time (s)."""

    latency: dict[str, float]
    rate: float
    rate_from: str
    late_s: float


def report(n: int, latency: dict[str, float], wall: float, overhead: dict[str, float],
           removal_s: float, agent_cpu_s: float, sequential: dict[str, float],
           paced: Paced) -> None:
    ms = [v * 1000 for v in latency.values()]
    seq = [v * 1000 for v in sequential.values()]
    pac = [v * 1000 for v in paced.latency.values()]
    figures = {
        "pod_start_p50_ms": statistics.median(ms),
        "pod_start_p99_ms": percentile(ms, 99),
        "overhead_mib_per_pod": overhead["mib_per_pod"],
        "sequential_pod_start_p50_ms": statistics.median(seq),
        "sequential_pod_start_p99_ms": percentile(seq, 99),
        "paced_pod_start_p50_ms": statistics.median(pac),
        "paced_pod_start_p99_ms": percentile(pac, 99),
    }
    met = targets_met(figures)
    rows: list[tuple[str, str, str]] = [
        ("burst: pod start p50", f"{figures['pod_start_p50_ms']:.1f} ms", "pod_start_p50_ms"),
        ("burst: pod start p99", f"{figures['pod_start_p99_ms']:.1f} ms", "pod_start_p99_ms"),
        ("burst: min / max", f"{min(ms):.1f} / {max(ms):.1f} ms", ""),
        ("burst: pods/s", f"{n / wall:.1f}", ""),
        ("burst: agent CPU/pod", f"{agent_cpu_s * 1000 / n:.1f} ms", ""),
        ("agent PSS before", f"{overhead['before_mib']:.1f} MiB", ""),
        ("agent PSS after", f"{overhead['agent_after_mib']:.1f} MiB", ""),
        ("shims PSS after", f"{overhead['shims_mib']:.1f} MiB", ""),
        ("overhead per pod", f"{overhead['mib_per_pod']:.2f} MiB", "overhead_mib_per_pod"),
        ("removal of all pods", f"{removal_s:.1f} s", ""),
        ("one by one: p50", f"{figures['sequential_pod_start_p50_ms']:.1f} ms",
         "sequential_pod_start_p50_ms"),
        ("one by one: p99", f"{figures['sequential_pod_start_p99_ms']:.1f} ms",
         "sequential_pod_start_p99_ms"),
        ("one by one: min / max", f"{min(seq):.1f} / {max(seq):.1f} ms", ""),
        ("paced: rate", f"{paced.rate:.1f} pods/s", ""),
        ("paced: p50", f"{figures['paced_pod_start_p50_ms']:.1f} ms", "paced_pod_start_p50_ms"),
        ("paced: p99", f"{figures['paced_pod_start_p99_ms']:.1f} ms", "paced_pod_start_p99_ms"),
        ("paced: min / max", f"{min(pac):.1f} / {max(pac):.1f} ms", ""),
        ("paced: latest arrival", f"{paced.late_s * 1000:.1f} ms late", ""),
    ]
    print(f"podium-agent: {n} busybox pods started at once, then {n} one after another, "
          f"then {n} at {paced.rate:.1f} pods/s ({paced.rate_from})")
    print(f"{'figure':<24} {'value':>18}  {'target':<10} met")
    for name, value, key in rows:
        print(f"{name:<24} {value:>18}  {target_text(key):<10} {met.get(key, '')}")
    print(json.dumps({
        "n": n,
        "pod_start_p50_ms": round(figures["pod_start_p50_ms"], 1),
        "pod_start_p99_ms": round(figures["pod_start_p99_ms"], 1),
        "pods_per_s": round(n / wall, 1),
        "overhead_mib_per_pod": round(overhead["mib_per_pod"], 3),
        "p50_target_met": met["pod_start_p50_ms"],
        "p99_target_met": met["pod_start_p99_ms"],
        "overhead_target_met": met["overhead_mib_per_pod"],
        "agent_pss_before_mib": round(overhead["before_mib"], 2),
        "agent_pss_after_mib": round(overhead["agent_after_mib"], 2),
        "shims_pss_mib": round(overhead["shims_mib"], 2),
        "removal_s": round(removal_s, 2),
        "agent_cpu_ms_per_pod": round(agent_cpu_s * 1000 / n, 1),
        "sequential_pod_start_p50_ms": round(figures["sequential_pod_start_p50_ms"], 1),
        "sequential_pod_start_p99_ms": round(figures["sequential_pod_start_p99_ms"], 1),
        "paced_pod_start_p50_ms": round(figures["paced_pod_start_p50_ms"], 1),
        "paced_pod_start_p99_ms": round(figures["paced_pod_start_p99_ms"], 1),
        "paced_rate_per_s": round(paced.rate, 2),
        "paced_rate_from": paced.rate_from,
        "paced_arrival_late_max_ms": round(paced.late_s * 1000, 1),
        "targets_met": met,
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="pods to start (default 100)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds to wait for the pods to run, and to go")
    parser.add_argument("--rate", type=float, default=None,
                        help="pods/s in the paced phase (default: half the burst's pods/s)")
    args = parser.parse_args()
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be above 0 pods/s, not {args.rate}")
    if os.geteuid() != 0:
        sys.exit("agent_pods.py needs root (namespaces, cgroups, mounts)")
    for tool in ("nsenter", "nft"):
        if shutil.which(tool) is None:
            sys.exit(f"agent_pods.py needs {tool}")
    if cgroup_dirs():
        sys.exit(f"cgroup {CGROUP_PARENT} exists already: another run, or a leftover")
    import prctl

    # Shims outlive the agent's fork server, re-parented to the nearest subreaper: as
    # one, this process inherits them, so none escapes the cleanup below and their
    # exits are collected here.
    prctl.set_child_subreaper(1)
    node = Node(Path(tempfile.mkdtemp(prefix="podium-bench-agent-")))
    try:
        node.prepare()
        node.start()
        before = pss(node.agent_pids())
        cpu_before = node.cpu_seconds()
        latency, wall, pods = start_pods(node, args.n, args.timeout)
        agent_cpu_s = node.cpu_seconds() - cpu_before
        # overhead_pss: (agent + fork server + every shim) after, minus (agent + fork
        # server) before, over N. PSS splits pages shared between processes (the shims
        # are forked from the fork server, copy-on-write), so the sum counts each once.
        shims = node.shim_pids(pods)
        agent_after, shims_after = pss(node.agent_pids()), pss(shims)
        overhead = {"before_mib": before / MIB, "agent_after_mib": agent_after / MIB,
                    "shims_mib": shims_after / MIB,
                    "mib_per_pod": (agent_after + shims_after - before) / MIB / args.n}
        removal_s = remove_pods(node, args.timeout)
        time.sleep(SETTLE)
        sequential = start_pods_one_by_one(node, args.n, args.timeout)
        remove_pods(node, args.timeout)
        time.sleep(SETTLE)
        if args.rate is None:
            rate, rate_from = PACED_FRACTION * args.n / wall, f"{PACED_FRACTION:g} x pods_per_s"
        else:
            rate, rate_from = args.rate, "--rate"
        paced_latency, late_s = start_pods_paced(node, args.n, rate, args.timeout)
        paced = Paced(paced_latency, rate, rate_from, late_s)
        remove_pods(node, args.timeout)
    finally:
        for warning in cleanup(node):
            print(f"warning: {warning}", file=sys.stderr)
    report(args.n, latency, wall, overhead, removal_s, agent_cpu_s, sequential, paced)
    return 0


if __name__ == "__main__":
    sys.exit(main())
