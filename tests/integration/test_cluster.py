"""A cluster on one machine: podium-scheduler (SQLite) and three podium-agents,
each agent in its own network namespace with its own root, bridge and cgroup
parent, all of them real processes running real containers.

One scenario, in order, because each step needs the cluster the previous one
left: a 6-replica Deployment spreads 2-2-2; a killed container is restarted by
its agent; a deleted pod is replaced; an agent killed with SIGKILL loses its
pods to the other nodes within 10 s; brought back, its stale containers stop;
the scheduler killed with SIGKILL and restarted has every acknowledged object
and the agents carry on without restarting a container.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto.podium.v1 import (
    agent_pb2,
    apps_pb2,
    cluster_pb2,
    core_pb2,
    pod_pb2,
)
from runtime.state import Status
from scheduler.objects import wrap
from tests.support.nodes import AgentNode, LocalCluster, need_cluster_tools, wait_for

pytestmark = pytest.mark.root

IMAGE = "podium-test/busybox:cluster"
NODES = ("ptc1", "ptc2", "ptc3")


class Cluster(LocalCluster):
    def __init__(self, tmp: Path, busybox_rootfs: Path, cgroup_parent: str) -> None:
        super().__init__(tmp, busybox_rootfs, cgroup_parent, IMAGE, NODES, "ptcbr",
                         ("--node-grace", "2", "--eviction-timeout", "2",
                          "--heartbeat-interval", "0.5"))

    def pods(self) -> list[pod_pb2.Pod]:
        items = self.api.List(cluster_pb2.ListRequest(kind="Pod", label_selector="app=web"),
                              timeout=5).items
        return [i.pod for i in items if not i.pod.metadata.HasField("deletion_timestamp")]

    def running(self) -> list[pod_pb2.Pod]:
        return [p for p in self.pods() if p.status.phase == "Running"]


@pytest.fixture
def cluster(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Cluster]:
    need_cluster_tools()
    with Cluster(tmp_dir, busybox_rootfs, cgroup_parent) as c:
        yield c


def web(replicas: int) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.metadata.labels["app"] = "web"
    spec = d.spec.template.spec
    spec.termination_grace_period_seconds = 1
    spec.containers.add(name="main", image=IMAGE, image_pull_policy="IfNotPresent",
                        command=["sh", "-c", "echo started; while true; do sleep 1; done"])
    return d


def container_pids(agent: AgentNode) -> set[int]:
    return {s.pid for s in agent.runtime().containers() if s.status is Status.RUNNING}


def test_cluster_places_restarts_replaces_and_survives_failures(cluster: Cluster) -> None:
    c = cluster
    c.start()

    def nodes_ready() -> bool:
        return c.ready_nodes() == 3

    wait_for("three Ready nodes", nodes_ready, 60, c.logs)
    c.api.Apply(cluster_pb2.ApplyRequest(object=wrap(web(6))), timeout=5)
    wait_for("6 Running pods", lambda: len(c.running()) == 6, 60, c.logs)
    spread = Counter(p.spec.node_name for p in c.running())
    assert sorted(spread.values()) == [2, 2, 2], spread

    # Logs, Exec and Stats through the scheduler's one endpoint.
    first = c.running()[0]
    logs = b"".join(r.data for r in c.api.Logs(agent_pb2.LogsRequest(
        namespace="default", pod=first.metadata.name), timeout=10))
    assert logs == b"started\n"
    start = agent_pb2.ExecRequest(start=agent_pb2.ExecStart(
        namespace="default", pod=first.metadata.name, command=["sh", "-c", "echo $((6*7))"]))
    answers = list(c.api.Exec(iter([start]), timeout=20))
    assert b"".join(a.stdout for a in answers) == b"42\n"
    assert answers[-1].WhichOneof("response") == "exit" and answers[-1].exit.exit_code == 0
    stats = c.api.Stats(agent_pb2.StatsRequest(node_name=first.spec.node_name), timeout=10)
    assert first.metadata.name in {p.name for p in stats.pods}

    # A container dies: its agent restarts it in place.
    victim = c.running()[0]
    agent = c.agents[victim.spec.node_name]
    rt = agent.runtime()
    container = next(s for s in rt.containers()
                     if s.id.startswith(victim.metadata.uid) and s.status is Status.RUNNING)
    rt.kill(container.id, signal.SIGKILL)

    def restarted() -> bool:
        pod = c.api.Get(cluster_pb2.GetRequest(kind="Pod", name=victim.metadata.name),
                        timeout=5).pod
        return pod.status.phase == "Running" and pod.status.container_statuses[0].restart_count >= 1
    wait_for("the killed container restarted", restarted, 30, c.logs)

    def started_twice() -> list[core_pb2.Event] | None:  # the agent's own events
        selector = f"involvedObject.uid={victim.metadata.uid},reason=Started"
        items = c.api.List(cluster_pb2.ListRequest(kind="Event", field_selector=selector),
                           timeout=5).items
        return [i.event for i in items if i.event.count >= 2] or None
    started = wait_for("the agent's Started event, counted twice", started_twice, 20, c.logs)
    assert started[0].source.component == "podium-agent"
    assert started[0].source.host == victim.spec.node_name
    assert started[0].involved_object.field_path == "spec.containers{main}"

    # A pod is deleted: its ReplicaSet replaces it.
    gone = c.running()[1].metadata.name
    c.api.Delete(cluster_pb2.DeleteRequest(kind="Pod", name=gone), timeout=5)
    wait_for("a replacement pod", lambda: len(c.running()) == 6
             and gone not in {p.metadata.name for p in c.pods()}, 30, c.logs)

    # A node dies (SIGKILL of its agent; its containers keep running, unseen).
    lost = c.agents["ptc1"]
    stale = container_pids(lost)
    lost.kill()
    wait_for("every pod Running elsewhere within 10 s",
             lambda: len(c.running()) == 6
             and all(p.spec.node_name != "ptc1" for p in c.pods()), 10, c.logs)
    assert stale and stale <= container_pids(lost)  # nobody told them yet

    # It comes back: the pods that were replaced stop there.
    lost.start()
    wait_for("the stale containers stopped", lambda: not container_pids(lost), 30, c.logs)
    wait_for("ptc1 Ready again", nodes_ready, 30, c.logs)

    # The scheduler dies with SIGKILL under load and comes back: nothing
    # acknowledged is lost, and no container restarts.
    # Settled first: six containers for six pods, none still stopping anywhere.
    wait_for("six containers for six Running pods", lambda: len(c.running()) == 6 and sum(
        len(container_pids(a)) for a in c.agents.values()) == 6, 30, c.logs)
    before = {a.name: container_pids(a) for a in c.agents.values()}
    acked = []
    for i in range(20):
        ns = cluster_pb2.Object()
        ns.namespace.metadata.name = f"ptc-load-{i}"
        c.api.Create(cluster_pb2.CreateRequest(object=ns), timeout=5)
        acked.append(ns.namespace.metadata.name)
    c.scheduler.kill(signal.SIGKILL)
    c.scheduler.start()
    listed = wait_for("the scheduler back", lambda: c.api.List(
        cluster_pb2.ListRequest(kind="Namespace"), timeout=5), 30, c.logs)
    assert set(acked) <= {n.namespace.metadata.name for n in listed.items}
    wait_for("6 Running pods after the restart", lambda: len(c.running()) == 6, 30, c.logs)
    assert {a.name: container_pids(a) for a in c.agents.values()} == before, c.logs()
    c.api.Delete(cluster_pb2.DeleteRequest(kind="Deployment", name="web"), timeout=5)
    wait_for("the pods gone", lambda: not c.pods() and all(
        not container_pids(a) for a in c.agents.values()), 60, c.logs)
