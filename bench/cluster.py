"""End to end on a cluster of one machine: pod start latency and node failover.

    sudo .venv/bin/python bench/cluster.py [--pods 100]

A podium-scheduler (SQLite, default timeouts: NotReady after 5 s without a
heartbeat, eviction 5 s later) and three podium-agents, each in a network
namespace of its own (the same set-up as tests/integration/test_cluster.py;
all state under a temporary directory, cgroups under podium-bench-cluster).

1. Start: N busybox pods are created through the API at once (one Create per
   pod, timestamped when acknowledged); a watch records when each is first
   Running. p50/p99 of Create → Running. For scale: Kubernetes' SLO is 5 s at
   p99; the target here is p99 under 1 s.
2. Failover: a 6-replica Deployment runs 2-2-2; one agent is killed with
   SIGKILL (its node stops heart-beating, as a dead VM would); the figure is
   the seconds until 6 pods are Running again with none on the dead node.
   Kubernetes' defaults take about 6 minutes; the target is under 10 s.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proto.podium.v1 import apps_pb2, cluster_pb2, cluster_pb2_grpc, pod_pb2  # noqa: E402
from runtime.images.bases import busybox_rootfs  # noqa: E402
from scheduler.objects import wrap  # noqa: E402
from tests.support.nodes import (  # noqa: E402
    AgentNode,
    SchedulerProcess,
    import_busybox,
    remove_cgroup_dirs,
    wait_for,
)

IMAGE = "podium-bench/busybox:cluster"
CGROUP = "podium-bench-cluster"


def pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.labels["bench"] = "start"
    p.spec.termination_grace_period_seconds = 1
    p.spec.containers.add(name="main", image=IMAGE, image_pull_policy="IfNotPresent",
                          command=["sleep", "3600"])
    return p


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def start_latency(api: cluster_pb2_grpc.ClusterServiceStub, n: int) -> list[float]:
    running: dict[str, float] = {}
    done = threading.Event()
    call = api.Watch(cluster_pb2.WatchRequest(kind="Pod", label_selector="bench=start"))

    def watch() -> None:
        try:
            for event in call:
                p = event.object.pod
                if p.status.phase == "Running" and p.metadata.name not in running:
                    running[p.metadata.name] = time.monotonic()
                    if len(running) == n:
                        done.set()
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    created: dict[str, float] = {}
    for i in range(n):
        name = f"bench-{i:03d}"
        api.Create(cluster_pb2.CreateRequest(object=wrap(pod(name))), timeout=10)
        created[name] = time.monotonic()
    if not done.wait(120):
        raise SystemExit(f"only {len(running)}/{n} pods Running after 120 s")
    call.cancel()
    for name in created:
        api.Delete(cluster_pb2.DeleteRequest(kind="Pod", name=name), timeout=10)
    return [running[name] - created[name] for name in created]


def failover(api: cluster_pb2_grpc.ClusterServiceStub, agents: dict[str, AgentNode]) -> float:
    d = apps_pb2.Deployment()
    d.metadata.name = "bench-web"
    d.spec.replicas = 6
    d.spec.selector.match_labels["app"] = "bench-web"
    d.spec.template.metadata.labels["app"] = "bench-web"
    d.spec.template.spec.termination_grace_period_seconds = 1
    d.spec.template.spec.containers.add(name="main", image=IMAGE,
                                        image_pull_policy="IfNotPresent",
                                        command=["sleep", "3600"])
    api.Apply(cluster_pb2.ApplyRequest(object=wrap(d)), timeout=10)

    def running() -> list[pod_pb2.Pod]:
        items = api.List(cluster_pb2.ListRequest(kind="Pod", label_selector="app=bench-web"),
                         timeout=10).items
        return [i.pod for i in items if i.pod.status.phase == "Running"
                and not i.pod.metadata.HasField("deletion_timestamp")]

    wait_for("6 Running replicas", lambda: len(running()) == 6, 120)
    victim = next(iter(agents.values()))
    victim.kill()
    died = time.monotonic()
    wait_for("the replicas Running elsewhere", lambda: len(running()) == 6 and all(
        p.spec.node_name != victim.name for p in running()), 120)
    return time.monotonic() - died


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podium-bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        images = tmp / "images"
        images.mkdir()
        rootfs = tmp / "busybox"
        busybox_rootfs(rootfs)
        import_busybox(images, rootfs, IMAGE)
        scheduler = SchedulerProcess(tmp)
        agents = {name: AgentNode(tmp, name, scheduler.address, images,
                                  f"{CGROUP}/{name}", f"pbcbr{i}")
                  for i, name in enumerate(("pbc1", "pbc2", "pbc3"))}
        channel = grpc.insecure_channel(scheduler.address)
        api = cluster_pb2_grpc.ClusterServiceStub(channel)
        try:
            scheduler.start()
            for agent in agents.values():
                agent.start()
            wait_for("three nodes", lambda: len(api.List(
                cluster_pb2.ListRequest(kind="Node"), timeout=5).items) == 3, 60)
            latencies = start_latency(api, args.pods)
            wait_for("the start pods gone", lambda: not api.List(cluster_pb2.ListRequest(
                kind="Pod", label_selector="bench=start"), timeout=5).items, 120)
            failover_s = failover(api, agents)
        finally:
            channel.close()
            for agent in agents.values():
                agent.close()
            scheduler.kill()
            remove_cgroup_dirs(CGROUP)
    p50 = percentile(latencies, 0.5) * 1000
    p99 = percentile(latencies, 0.99) * 1000
    print(f"{'pods':>6} {'p50 ms':>8} {'p99 ms':>8} {'failover s':>11}")
    print(f"{args.pods:>6} {p50:>8.0f} {p99:>8.0f} {failover_s:>11.1f}")
    print(json.dumps({"bench": "cluster", "pods": args.pods, "nodes": 3,
                      "e2e_start_p50_ms": round(p50, 1), "e2e_start_p99_ms": round(p99, 1),
                      "failover_s": round(failover_s, 2), "node_grace_s": 5,
                      "eviction_timeout_s": 5, "target_p99_ms": 1000, "target_failover_s": 10}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
