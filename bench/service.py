"""Requests per second through a ClusterIP versus straight to the pods, and the time
from a pod turning ready to its first request through the Service.

    sudo .venv/bin/python bench/service.py [--agents 2] [--rounds 10] [--duration 3]

A podium-scheduler and one or two podium-agents, each agent in a network namespace
of its own, joined by a test bridge (tests/support/wire.py, as
tests/integration/test_services.py does; all state under a temporary directory,
cgroups under ``podium-bench-service``). A 3-replica Deployment of busybox httpd
(``httpd -f -p 8080 -h /www``, index.html holding the pod's name) sits behind a
ClusterIP Service, port 80 to 8080. The scheduler is given a 15 s node grace so that
a node starved of CPU by the load is not declared lost in the middle of a round.

The load generator runs on the first node: ``--procs`` Python processes started
with ``nsenter --net`` into that node's namespace, ``--threads`` each. Every request
is an HTTP/1.0 GET on a new TCP connection (no keep-alive), so every request goes
through conntrack, and the Service's through the node's nftables DNAT. Four ways,
the same client each time:

- ``svc_rps``: to the ClusterIP, port 80; the kernel picks a pod per connection;
- ``direct_rps``: to one pod's IP, port 8080 (one pod serving what three serve above);
- ``direct3_rps``: to the three pod IPs in turn, chosen by the client: the same work
  as the Service without the DNAT;
- ``direct3_random_rps``: to a pod IP the client draws at random for each
  connection, as the Service's rule does (``numgen random``): an uneven share at a
  given moment costs throughput when one pod's httpd is the bottleneck;
- ``svc_ratio`` = ``svc_rps / direct3_rps``, the headline (target >= 0.9);
  ``svc_ratio_random`` = ``svc_rps / direct3_random_rps`` (the DNAT alone);
  ``svc_vs_direct1`` = ``svc_rps / direct_rps``.

Each round runs the four ways for ``--duration`` seconds each, in an order rotated
every round, after one untimed second of each; figures are medians over the rounds.
Only requests completed inside the window count.

Each way connects from an address of its own (extra addresses of the first node on
the wire), so no way meets the pods' TIME_WAIT sockets of another: bench/README.md
tells how sharing one address cost the Service way up to half its rate.
``syn_retransmits`` (the load namespace's TCPSynRetrans over each way's rounds) would
show such stalls, as would ``request_ms`` (medians over the rounds of the first load
process's p50 and p99 times per request). A request that fails (refused,
reset, 3 s without an answer, not a 200) is an error: errors are counted per way
and per round, and a round with any is listed in ``rounds_with_errors``.

``endpoint_update_ms``: a pod is made unready (its readinessProbe checks for a file
in a hostPath directory the bench controls), taken out of the Endpoints and given
1.5 s more for the nodes' rules; a poller on the first node (2 threads, each
pausing 2 ms between requests) starts asking the ClusterIP; the file is removed.
The figure is from the arrival, on a Watch of the pods through the ClusterService,
of the event in which the pod's Ready condition turns True, to the first answer
through the ClusterIP that names that pod. Repeated ``--updates`` times over the
three pods in turn; median, p90 (nearest rank) and the count. A second Watch, of
the Endpoints, splits it: ``ready_to_endpoints_ms`` (the scheduler's controller) and
``endpoints_to_traffic_ms`` (the node's agent and nftables). ``file_to_traffic_ms``
is from the file's removal instead (it includes the probe's 1 s period).

At the end (also on Ctrl-C, SIGTERM or an error) the bench kills its load
processes by PID, stops the agents and the scheduler, force-deletes any container
left, removes the nodes', pods' and wire's network namespaces, kills by PID anything
still in its cgroups and removes them, unmounts anything left under its temporary
directory and removes it. Prints a table, then one JSON line.
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
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from proto.kube import load_objects  # noqa: E402
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, pod_pb2  # noqa: E402
from runtime.images.bases import busybox_rootfs  # noqa: E402
from tests.support.nodes import (  # noqa: E402
    AgentNode,
    SchedulerProcess,
    cgroup_trees,
    import_busybox,
    kill_cgroup_processes,
    remove_cgroup_dirs,
    wait_for,
)
from tests.support.wire import Wire  # noqa: E402

IMAGE = "podium-bench/busybox:service"
CGROUP = "podium-bench-service"
NODES = ("pbs1", "pbs2")
APP = "bench-echo"
SETTLE = 1.5  # seconds after the Endpoints change: the agents promise rules within 1 s
TARGET_RATIO = 0.9
WAYS = ("svc", "direct", "direct3", "direct3_random")
UPDATE_FIGURES = ("endpoint_update", "ready_to_endpoints", "endpoints_to_traffic",
                  "file_to_traffic")

# Ready while no "unready-<pod name>" file is in the bench's shared directory. Three
# failures in a row (not one) make a pod unready, so a probe slowed by the load does
# not take a pod out in the middle of a round; the bench waits for it anyway.
WORKLOAD = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {APP}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: {APP}}}}}
  template:
    metadata: {{labels: {{app: {APP}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: [sh, -c]
        args:
        - |
          mkdir -p /www
          hostname > /www/index.html
          exec httpd -f -p 8080 -h /www
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          exec: {{command: [sh, -c, 'test ! -e /shared/unready-$(hostname)']}}
          periodSeconds: 1
          timeoutSeconds: 5
          failureThreshold: 3
        volumeMounts:
        - {{name: shared, mountPath: /shared}}
      volumes:
      - name: shared
        hostPath: {{path: SHARED}}
---
apiVersion: v1
kind: Service
metadata: {{name: {APP}}}
spec:
  selector: {{app: {APP}}}
  ports:
  - {{port: 80, targetPort: 8080}}
"""


# --- the bench ----------------------------------------------------------------------


class Workers:
    """Load processes in a node's network namespace, driven over their stdin/stdout."""

    def __init__(self, netns: Path, count: int, log: Path) -> None:
        self.log = log
        self.procs: list[subprocess.Popen[str]] = []
        with open(log, "ab") as err:
            for _ in range(count):
                self.procs.append(subprocess.Popen(
                    ["nsenter", f"--net={netns}", sys.executable, str(LOADGEN)], cwd=REPO,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True))

    def send(self, index: int, cmd: dict[str, Any]) -> None:
        stdin = self.procs[index].stdin
        assert stdin is not None
        stdin.write(json.dumps(cmd) + "\n")
        stdin.flush()

    def receive(self, index: int) -> dict[str, Any]:
        stdout = self.procs[index].stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"load process {self.procs[index].pid} ended early:\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, targets: list[tuple[str, int]], threads: int, duration: float,
            shuffle: bool, source: str) -> dict[str, Any]:
        """Every process at once from a common start; the sums, with the namespace's TCP
        counters and the first process's request times."""
        start_at = time.monotonic() + 0.3
        for i in range(len(self.procs)):
            self.send(i, {"op": "load", "targets": targets, "threads": threads,
                          "start_at": start_at, "duration": duration, "shuffle": shuffle,
                          "source": source})
        total: dict[str, Any] = {"ok": 0, "errors": Counter(), "bodies": Counter()}
        for i in range(len(self.procs)):
            part = self.receive(i)
            total["ok"] += part["ok"]
            total["errors"].update(part["errors"])
            total["bodies"].update(part["bodies"])
            if i == 0:  # the namespace's counters: every process sees the same
                total["tcp"] = part["tcp"]
                total["took_ms"] = part["took_ms"]
        return total

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass


class FlipWatch:
    """Watches, through the ClusterService, either the pods (``kind`` Pod: their Ready
    condition) or the Service's Endpoints (a pod in or out of its ready addresses), and
    records the arrival time of every event in which a pod flips."""

    def __init__(self, api: cluster_pb2_grpc.ClusterServiceStub, kind: str) -> None:
        self.kind = kind
        self.state: dict[str, bool] = {}
        self.flips: list[tuple[str, bool, float]] = []  # (pod, in now, arrival)
        self.changed = threading.Condition()
        selector = f"app={APP}" if kind == "Pod" else ""
        self.call = api.Watch(cluster_pb2.WatchRequest(kind=kind, namespace="default",
                                                       label_selector=selector))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _states(self, obj: cluster_pb2.Object) -> dict[str, bool]:
        if self.kind == "Pod":
            return {obj.pod.metadata.name: any(c.type == "Ready" and c.status == "True"
                                               for c in obj.pod.status.conditions)}
        if obj.endpoints.metadata.name != APP:
            return {}
        now = {a.target_ref.name for s in obj.endpoints.subsets for a in s.addresses}
        return {name: name in now for name in set(self.state) | now}

    def _run(self) -> None:
        try:
            for event in self.call:
                arrived = time.monotonic()
                if event.type not in (cluster_pb2.WatchEvent.ADDED,
                                      cluster_pb2.WatchEvent.MODIFIED):
                    continue
                with self.changed:
                    for name, state in self._states(event.object).items():
                        if self.state.get(name) != state:
                            if name in self.state:
                                self.flips.append((name, state, arrived))
                            self.state[name] = state
                            self.changed.notify_all()
        except grpc.RpcError:
            pass  # cancelled at the end

    def wait_flip(self, name: str, ready: bool, after: int, timeout: float) -> float:
        """The arrival of the first flip of ``name`` to ``ready`` among flips[after:]."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for pod, now_ready, arrived in self.flips[after:]:
                    if pod == name and now_ready == ready:
                        return arrived
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"pod {name} not {'in' if ready else 'out'} "
                                       f"({self.kind} watch) after {timeout:.0f} s")
                # Short waits: a signal taken by another thread still reaches main soon.
                self.changed.wait(min(left, 0.2))

    def close(self) -> None:
        self.call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leave it untyped
        self.thread.join(timeout=5)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.shared = tmp / "shared"
        self.scheduler = SchedulerProcess(tmp, "--node-grace", "15")
        self.wire: Wire | None = None
        self.agents: list[AgentNode] = []
        self.workers: Workers | None = None
        self.sources: dict[str, str] = {}  # way: the load generator's address for it
        self.watch: FlipWatch | None = None
        self.endpoints_watch: FlipWatch | None = None
        self.channel = grpc.insecure_channel(self.scheduler.address)
        self.api = cluster_pb2_grpc.ClusterServiceStub(self.channel)

    def prepare(self, agents: int) -> None:
        """The image, the wire and the nodes' namespaces (``close`` removes them)."""
        self.shared.mkdir()
        images = self.tmp / "images"
        images.mkdir()
        rootfs = busybox_rootfs(self.tmp / "busybox")
        import_busybox(images, rootfs, IMAGE)
        shutil.rmtree(rootfs)
        self.wire = Wire(self.tmp, "pbsw")
        for i, name in enumerate(NODES[:agents]):
            self.agents.append(AgentNode(self.tmp, name, self.scheduler.address, images,
                                         f"{CGROUP}/{name}", f"pbsbr{i}", self.wire))
        self.sources = {way: str(self.wire.add_address(self.agents[0].netns)) for way in WAYS}

    def logs(self) -> str:
        parts = [f"--- scheduler\n{self.scheduler.output()[-3000:]}"]
        parts += [f"--- {a.name}\n{a.output()[-3000:]}" for a in self.agents]
        return "\n".join(parts)

    def ready_endpoints(self) -> set[str]:
        try:
            e = self.api.Get(cluster_pb2.GetRequest(kind="Endpoints", namespace="default",
                                                    name=APP), timeout=5).endpoints
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return set()
            raise
        return {a.target_ref.name for s in e.subsets for a in s.addresses}

    def pods(self) -> list[pod_pb2.Pod]:
        items = self.api.List(cluster_pb2.ListRequest(kind="Pod", label_selector=f"app={APP}"),
                              timeout=5).items
        return sorted((i.pod for i in items if not i.pod.metadata.HasField("deletion_timestamp")),
                      key=lambda p: p.metadata.name)

    def start(self, procs: int) -> tuple[str, list[pod_pb2.Pod]]:
        self.scheduler.start()
        for agent in self.agents:
            agent.start()
        wait_for(f"{len(self.agents)} nodes Ready", lambda: len(
            [i for i in self.api.List(cluster_pb2.ListRequest(kind="Node"), timeout=5).items
             if any(c.type == "Ready" and c.status == "True" for c in i.node.status.conditions)]
        ) == len(self.agents), timeout=60, logs=self.logs)
        self.watch = FlipWatch(self.api, "Pod")
        self.endpoints_watch = FlipWatch(self.api, "Endpoints")
        for converted in load_objects(WORKLOAD.replace("SHARED", str(self.shared))):
            self.api.Apply(cluster_pb2.ApplyRequest(object=converted.object), timeout=10)
        wait_for("3 ready endpoints", lambda: len(self.ready_endpoints()) == 3, timeout=120,
                 logs=self.logs)
        cluster_ip = self.api.Get(cluster_pb2.GetRequest(
            kind="Service", namespace="default", name=APP), timeout=5).service.spec.cluster_ip
        self.workers = Workers(self.agents[0].netns, procs, self.tmp / "load.log")
        pods = self.pods()
        names = {p.metadata.name for p in pods}

        def all_answer() -> bool:
            assert self.workers is not None
            self.workers.send(0, {"op": "count", "target": [cluster_ip, 80], "duration": 0.5})
            return set(self.workers.receive(0)["bodies"]) == names

        wait_for("every pod answering through the ClusterIP", all_answer, timeout=30,
                 logs=self.logs)
        return cluster_ip, pods

    def close(self) -> list[str]:
        """Stops and removes everything; warnings for what had to be forced."""
        warnings: list[str] = []

        def step(what: str, action: Any) -> None:
            try:
                action()
            except Exception as e:  # keep cleaning: one failure must not leave the rest
                warnings.append(f"{what}: {e}")

        for watch in (self.watch, self.endpoints_watch):
            if watch is not None:
                step("watch", watch.close)
        step("channel", self.channel.close)
        if self.workers is not None:
            step("load processes", self.workers.close)
        for agent in self.agents:
            step(f"agent {agent.name}", agent.close)
        step("scheduler", self.scheduler.kill)
        if self.wire is not None:
            step("wire", self.wire.close)
        def cgroup_processes() -> None:
            if killed := kill_cgroup_processes(CGROUP):
                warnings.append(f"killed {len(killed)} processes left in the cgroups")

        step("cgroup processes", cgroup_processes)
        step("cgroups", lambda: remove_cgroup_dirs(CGROUP))
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f]
        for target in sorted((m for m in mounts if m.startswith(f"{self.tmp}/")),
                             key=len, reverse=True):
            warnings.append(f"mount {target} left: unmounted")
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return warnings


def throughput(workers: Workers, cluster_ip: str, pods: list[pod_pb2.Pod], direct: pod_pb2.Pod,
               sources: dict[str, str], threads: int, rounds: int,
               duration: float) -> dict[str, list[dict[str, Any]]]:
    """Each way from its own source address (``sources``): see the module's text."""
    targets = {"svc": [(cluster_ip, 80)],
               "direct": [(direct.status.pod_ip, 8080)],
               "direct3": [(p.status.pod_ip, 8080) for p in pods]}
    targets["direct3_random"] = targets["direct3"]
    for way in WAYS:  # warm-up, not counted
        workers.run(targets[way], threads, 1.0, way == "direct3_random", sources[way])
    results: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    for r in range(rounds):
        for way in WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]:
            got = workers.run(targets[way], threads, duration, way == "direct3_random",
                              sources[way])
            got["rps"] = got["ok"] / duration
            results[way].append(got)
            errors = sum(got["errors"].values())
            print(f"round {r + 1} {way:<14} {got['rps']:6.0f} req/s  errors {errors}"
                  + (f" {dict(got['errors'])}" if errors else "")
                  + f"  SYN resent {got['tcp']['TCPSynRetrans']}"
                  f"  ms p50 {got['took_ms']['p50']} p99 {got['took_ms']['p99']}", file=sys.stderr)
    return results


def endpoint_updates(bench: Bench, cluster_ip: str, pods: list[pod_pb2.Pod],
                     repeats: int) -> tuple[dict[str, list[float]], list[str]]:
    """Samples in ms (see ``UPDATE_FIGURES``) and the problems met."""
    assert bench.workers is not None
    assert bench.watch is not None and bench.endpoints_watch is not None
    workers, watch, endpoints = bench.workers, bench.watch, bench.endpoints_watch
    samples: dict[str, list[float]] = {k: [] for k in UPDATE_FIGURES}
    problems: list[str] = []
    for i in range(repeats):
        pod = pods[i % len(pods)]
        name = pod.metadata.name
        flag = bench.shared / f"unready-{name}"
        mark = len(endpoints.flips)
        flag.touch()
        endpoints.wait_flip(name, False, mark, 30)
        time.sleep(SETTLE)
        mark, mark_endpoints = len(watch.flips), len(endpoints.flips)
        workers.send(0, {"op": "poll", "target": [cluster_ip, 80], "want": name,
                         "timeout": 30})
        workers.receive(0)  # polling has begun
        flag.unlink()
        removed = time.monotonic()
        ready_at = watch.wait_flip(name, True, mark, 30)
        in_endpoints = endpoints.wait_flip(name, True, mark_endpoints, 30)
        answer = workers.receive(0)
        if answer["hit"] is None:
            problems.append(f"{name}: no answer through the ClusterIP in 30 s")
            continue
        hit = float(answer["hit"])
        if hit < removed:
            problems.append(f"{name}: answered while unready ({answer['counts']})")
            continue
        for key, value in (("endpoint_update", hit - ready_at),
                           ("ready_to_endpoints", in_endpoints - ready_at),
                           ("endpoints_to_traffic", hit - in_endpoints),
                           ("file_to_traffic", hit - removed)):
            samples[key].append(value * 1000)
        print(f"update {i + 1} {name} on {pod.spec.node_name}: "
              f"{samples['endpoint_update'][-1]:.0f} ms after the Ready event "
              f"({samples['ready_to_endpoints'][-1]:.0f} ms to the Endpoints)", file=sys.stderr)
    return samples, problems


def stat(samples: list[float], p: float) -> float | None:
    """Median (p 50) or nearest-rank percentile, rounded; None without samples."""
    if not samples:
        return None
    return round(statistics.median(samples) if p == 50 else percentile(samples, p), 1)


def summary(results: dict[str, list[dict[str, Any]]], updates: dict[str, list[float]],
            problems: list[str], args: argparse.Namespace, direct: pod_pb2.Pod,
            loadgen: str, sources: dict[str, str]) -> dict[str, Any]:
    rps = {way: [r["rps"] for r in results[way]] for way in WAYS}
    med = {way: statistics.median(rps[way]) for way in WAYS}
    paired = [s / d for s, d in zip(rps["svc"], rps["direct3"], strict=True) if d]
    spread: Counter[str] = Counter()
    for r in results["svc"]:
        spread.update(r["bodies"])
    with_errors = [{"way": way, "round": i + 1, "errors": dict(r["errors"])}
                   for way in WAYS for i, r in enumerate(results[way]) if r["errors"]]
    return {
        "bench": "service",
        "agents": args.agents,
        "loadgen": f"{args.procs} processes x {args.threads} threads in node {loadgen}'s netns",
        "connections": "HTTP/1.0 GET, a new TCP connection per request: every request "
                       "through conntrack, the Service's through the kernel's DNAT",
        "duration_s": args.duration,
        "rounds": args.rounds,
        "svc_rps": round(med["svc"], 1),
        "direct_rps": round(med["direct"], 1),
        "direct3_rps": round(med["direct3"], 1),
        "svc_ratio": round(med["svc"] / med["direct3"], 3) if med["direct3"] else None,
        "svc_ratio_of": "direct3_rps",
        "svc_ratio_paired_median": round(statistics.median(paired), 3) if paired else None,
        "svc_vs_direct1": round(med["svc"] / med["direct"], 3) if med["direct"] else None,
        "direct_pod_node": direct.spec.node_name,
        "svc_rounds_rps": [round(x) for x in rps["svc"]],
        "direct_rounds_rps": [round(x) for x in rps["direct"]],
        "direct3_rounds_rps": [round(x) for x in rps["direct3"]],
        "direct3_random_rps": round(med["direct3_random"], 1),
        "direct3_random_rounds_rps": [round(x) for x in rps["direct3_random"]],
        "svc_ratio_random": (round(med["svc"] / med["direct3_random"], 3)
                             if med["direct3_random"] else None),
        "svc_spread": dict(sorted(spread.items())),
        "errors": {way: sum(sum(r["errors"].values()) for r in results[way]) for way in WAYS},
        "syn_retransmits": {way: sum(r["tcp"]["TCPSynRetrans"] for r in results[way])
                            for way in WAYS},
        "request_ms": {way: {q: stat([r["took_ms"][q] for r in results[way]
                                      if r["took_ms"][q] is not None], 50)
                             for q in ("p50", "p99")} for way in WAYS},
        "client_sources": sources,
        "rounds_with_errors": with_errors,
        "endpoint_update_ms": stat(updates["endpoint_update"], 50),
        "endpoint_update_p90_ms": stat(updates["endpoint_update"], 90),
        "endpoint_update_samples": len(updates["endpoint_update"]),
        "endpoint_update_all_ms": [round(x) for x in updates["endpoint_update"]],
        "ready_to_endpoints_ms": stat(updates["ready_to_endpoints"], 50),
        "ready_to_endpoints_p90_ms": stat(updates["ready_to_endpoints"], 90),
        "endpoints_to_traffic_ms": stat(updates["endpoints_to_traffic"], 50),
        "endpoints_to_traffic_p90_ms": stat(updates["endpoints_to_traffic"], 90),
        "file_to_traffic_ms": stat(updates["file_to_traffic"], 50),
        "endpoint_update_problems": problems,
        "target_ratio": TARGET_RATIO,
        "target_met": bool(med["direct3"]) and med["svc"] / med["direct3"] >= TARGET_RATIO,
    }


def report(figures: dict[str, Any]) -> None:
    print(f"{'way':<15} {'req/s (median)':>15}  rounds")
    for way in WAYS:
        print(f"{way:<15} {figures[f'{way}_rps']:>15.0f}  {figures[f'{way}_rounds_rps']}")
    print(f"svc / direct3 {figures['svc_ratio']}  (paired {figures['svc_ratio_paired_median']},"
          f" target >= {TARGET_RATIO})   svc / direct3_random {figures['svc_ratio_random']}"
          f"   svc / direct {figures['svc_vs_direct1']}")
    print(f"errors {figures['errors']}   SYNs sent again {figures['syn_retransmits']}")
    print(f"endpoint update: median {figures['endpoint_update_ms']} ms, "
          f"p90 {figures['endpoint_update_p90_ms']} ms over "
          f"{figures['endpoint_update_samples']} (Ready to Endpoints "
          f"{figures['ready_to_endpoints_ms']} ms, Endpoints to traffic "
          f"{figures['endpoints_to_traffic_ms']} ms)")
    print(json.dumps(figures))


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, choices=(1, 2), default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per way and round")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--threads", type=int, default=4, help="connections per process")
    parser.add_argument("--updates", type=int, default=9, help="endpoint update samples")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("service.py needs root (namespaces, cgroups, nftables)")
    for tool in ("nsenter", "nft"):
        if shutil.which(tool) is None:
            sys.exit(f"service.py needs {tool}")
    if cgroup_trees(CGROUP):
        sys.exit(f"cgroup {CGROUP} exists already: another run, or a leftover")
    signal.signal(signal.SIGTERM, _terminate)
    bench = Bench(Path(tempfile.mkdtemp(prefix="podium-bench-service-")))
    try:
        bench.prepare(args.agents)
        cluster_ip, pods = bench.start(args.procs)
        assert bench.workers is not None
        loadgen = bench.agents[0].name
        # The one pod of `direct`: on the load generator's node when one is there.
        direct = next((p for p in pods if p.spec.node_name == loadgen), pods[0])
        assert bench.endpoints_watch is not None
        before = len(bench.endpoints_watch.flips)
        results = throughput(bench.workers, cluster_ip, pods, direct, bench.sources,
                             args.threads, args.rounds, args.duration)
        # A probe slowed by the load could take a pod out mid-round: say if it did.
        flaps = len(bench.endpoints_watch.flips) - before
        updates, problems = endpoint_updates(bench, cluster_ip, pods, args.updates)
    finally:
        for warning in bench.close():
            print(f"warning: {warning}", file=sys.stderr)
    figures = summary(results, updates, problems, args, direct, loadgen, bench.sources)
    figures["endpoint_changes_during_load"] = flaps
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
