"""Placement throughput: 10,000 pods onto 1,000 hollow nodes.

    .venv/bin/python bench/placement.py [--nodes 1000] [--pods 10000] [--repeat 3]

Hollow nodes are Node objects a real agent would register (Ready, 4 CPUs,
8 GiB, 110 pods), written through the scheduler's own registry into its
SQLite store in a temporary directory; they run nothing. The pods (100m CPU,
128 MiB each, ten Deployment-like owners so spreading has work to do) are
stored first, then the scheduler's Placer starts and binds them: each bind is
a compare-and-swap write to the store (fsync'ed, as in production) plus a
"Scheduled" Event, exactly what `podium-scheduler` does.

Figures: pods placed per second (from the Placer's start to the last bind,
the median of --repeat runs) and the p50/p99 of one decision (filter, sample,
score) from all runs. For scale: Kubernetes' scheduler is measured at about
100 pods/s at 5,000 nodes; the target here is at least 1,000 pods/s.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.podium.v1 import node_pb2, pod_pb2  # noqa: E402
from scheduler.api.registry import Registry  # noqa: E402
from scheduler.objects import wrap  # noqa: E402
from scheduler.placement import Framework, Placer  # noqa: E402
from scheduler.placement.framework import Decision  # noqa: E402
from scheduler.placement.snapshot import PodInfo, Snapshot  # noqa: E402
from scheduler.store import open_store  # noqa: E402


class TimedFramework(Framework):
    """The default plugins, with each decision's duration kept."""

    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []

    def decide(self, pod: pod_pb2.Pod | PodInfo, snapshot: Snapshot) -> Decision:
        start = time.perf_counter()
        decision = super().decide(pod, snapshot)
        self.durations.append(time.perf_counter() - start)
        return decision


def hollow_node(name: str) -> node_pb2.Node:
    node = node_pb2.Node()
    node.metadata.name = name
    node.spec.pod_cidr = ""
    for field in (node.status.capacity, node.status.allocatable):
        field.update({"cpu": "4", "memory": "8Gi", "pods": "110"})
    node.status.conditions.add(type="Ready", status="True")
    return node


def pod(i: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"bench-{i}"
    owner = p.metadata.owner_references.add(api_version="apps/v1", kind="ReplicaSet",
                                            name=f"web{i % 10}", uid=f"rs-{i % 10}")
    owner.controller = True
    c = p.spec.containers.add(name="main", image="busybox:1.36")
    c.resources.requests.update({"cpu": "100m", "memory": "128Mi"})
    return p


def run_once(nodes: int, pods: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory(prefix="podium-bench-placement-") as tmp:
        store = open_store(str(Path(tmp) / "cluster.db"))
        try:
            registry = Registry(store)
            registry.ensure_namespace("default")
            for n in range(nodes):
                registry.create(wrap(hollow_node(f"hollow-{n:04d}")))
            for i in range(pods):
                registry.create(wrap(pod(i)))
            framework = TimedFramework()
            placer = Placer(registry, framework)
            watch = store.watch("Pod")
            stop = threading.Event()
            thread = threading.Thread(target=placer.run, args=(stop,), daemon=True)
            start = time.perf_counter()
            thread.start()
            bound = 0
            while bound < pods:
                change = watch.next(timeout=60)
                if change is None:
                    raise SystemExit(f"placement stalled at {bound}/{pods} pods")
                if change.object.HasField("pod") and change.object.pod.spec.node_name \
                        and change.type == "MODIFIED" and _just_bound(change.object.pod):
                    bound += 1
            elapsed = time.perf_counter() - start
            stop.set()
            thread.join(timeout=10)
            watch.close()
            return pods / elapsed, framework.durations
        finally:
            store.close()


def _just_bound(p: pod_pb2.Pod) -> bool:
    return any(c.type == "PodScheduled" and c.status == "True" for c in p.status.conditions) \
        and p.status.phase == "Pending"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: list[float] = []
    durations: list[float] = []
    for run in range(args.repeat):
        rate, taken = run_once(args.nodes, args.pods)
        rates.append(rate)
        durations.extend(taken)
        print(f"run {run + 1}: {rate:,.0f} pods/s, {len(taken)} decisions", file=sys.stderr)
    durations.sort()
    p50 = durations[len(durations) // 2] * 1000
    p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))] * 1000
    rate = statistics.median(rates)
    print(f"{'nodes':>8} {'pods':>8} {'pods/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{args.nodes:>8} {args.pods:>8} {rate:>10,.0f} {p50:>8.3f} {p99:>8.3f}")
    print(json.dumps({"bench": "placement", "nodes": args.nodes, "pods": args.pods,
                      "place_pods_per_s": round(rate, 1), "decision_p50_ms": round(p50, 3),
                      "decision_p99_ms": round(p99, 3), "runs": args.repeat,
                      "target_pods_per_s": 1000}))


if __name__ == "__main__":
    main()
