"""Node lifecycle (leases, NotReady, eviction), garbage collection and the
manager, on plain objects and the fake cluster."""

from __future__ import annotations

import threading

from proto.podium.v1 import apps_pb2, cluster_pb2, node_pb2
from scheduler.controllers import (
    ControllerManager,
    Delete,
    GarbageCollector,
    Leases,
    NodeLifecycleController,
    ReplicaSetController,
    Update,
    plan_gc,
    plan_nodes,
)
from scheduler.controllers.base import Controller
from scheduler.controllers.nodelifecycle import TICK, UNKNOWN_MESSAGE, next_crossing
from scheduler.controllers.pods import is_active, owner_reference
from scheduler.objects import Key, key_of, meta, wrap
from tests.unit.test_scheduler_controllers_fake import FakeCluster, make_pod
from tests.unit.test_scheduler_controllers_replicaset import kubelet, make_rs


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_node(name: str, ready: str = "True") -> cluster_pb2.Object:
    node = node_pb2.Node()
    node.metadata.name = name
    node.status.conditions.add(type="Ready", status=ready, reason="NodeReady")
    node.status.conditions.add(type="MemoryPressure", status="False")
    return wrap(node)


def conditions(cluster: FakeCluster, name: str) -> dict[str, tuple[str, str]]:
    node = cluster.get(Key("Node", "", name)).node
    return {c.type: (c.status, c.reason) for c in node.status.conditions}


class NodeWorld:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.clock = Clock()
        self.leases = Leases(self.clock)
        for name in ("n1", "n2"):
            self.cluster.create(make_node(name))
            self.leases.renew(name)
        self.nodes = NodeLifecycleController(self.cluster, self.leases, node_grace=5.0,
                                             eviction_timeout=5.0,
                                             wall=lambda: self.cluster.now)
        self.rs = ReplicaSetController(self.cluster, wall=lambda: self.cluster.now)

    def tick(self, seconds: float, renew: tuple[str, ...] = ("n2",)) -> None:
        """`seconds` pass with heartbeats from `renew` every second."""
        for _ in range(int(seconds * 5)):
            self.clock.now += 0.2
            if round(self.clock.now, 1) % 1 == 0:
                for name in renew:
                    self.leases.renew(name)
            self.nodes.step()
            self.rs.step()


def test_plan_marks_silent_nodes_unknown_then_evicts() -> None:
    node = make_node("n1").node
    pod = make_pod("p", node="n1").pod
    assert plan_nodes([node], [pod], {"n1": 4.0}, 5.0, 5.0, 0.0) == []
    actions = plan_nodes([node], [pod], {"n1": 6.0}, 5.0, 5.0, 0.0)
    assert [type(a).__name__ for a in actions] == ["UpdateStatus", "Emit"]
    marked = actions[0].object.node  # type: ignore[union-attr]
    assert {c.status for c in marked.status.conditions} == {"Unknown"}
    ready = next(c for c in marked.status.conditions if c.type == "Ready")
    assert (ready.reason, ready.message) == ("NodeStatusUnknown", UNKNOWN_MESSAGE)
    actions = plan_nodes([marked], [pod], {"n1": 11.0}, 5.0, 5.0, 0.0)
    assert [type(a).__name__ for a in actions] == ["Emit", "Delete", "Create"]


def test_silent_node_goes_not_ready_and_its_pods_are_replaced() -> None:
    w = NodeWorld()
    rs = make_rs(replicas=2)
    rs.metadata.uid = ""
    w.cluster.create(wrap(rs))
    w.rs.step()
    for obj in w.cluster.of("Pod"):  # both on n1
        w.cluster.bind(key_of(obj), "n1", obj.pod.metadata.resource_version)
    kubelet(w.cluster)
    lost = {meta(o).uid for o in w.cluster.of("Pod")}

    w.tick(4)
    assert conditions(w.cluster, "n1")["Ready"] == ("True", "NodeReady")
    w.tick(2)
    assert conditions(w.cluster, "n1")["Ready"] == ("Unknown", "NodeStatusUnknown")
    assert conditions(w.cluster, "n2")["Ready"] == ("True", "NodeReady")
    assert "NodeNotReady" in w.cluster.reasons()
    assert {meta(o).uid for o in w.cluster.of("Pod")} == lost  # not yet evicted
    w.tick(5)
    pods = [o.pod for o in w.cluster.of("Pod") if is_active(o.pod)]
    assert len(pods) == 2
    assert not {p.metadata.uid for p in pods} & lost
    assert all(p.spec.node_name == "" for p in pods)  # for placement to bind
    assert w.cluster.reasons().count("Evicted") == 2
    assert w.cluster.reasons().count("NodeNotReady") == 1


def test_bare_pods_are_recreated_or_failed() -> None:
    w = NodeWorld()
    always = w.cluster.create(make_pod("always", node="n1"))
    w.cluster.create(make_pod("never", node="n1", restart="Never"))
    w.tick(11)
    again = w.cluster.get(key_of(always)).pod
    assert again.metadata.uid != meta(always).uid
    assert again.spec.node_name == ""
    assert not again.status.phase
    assert Key("Pod", "default", "never") not in w.cluster.objects
    lost = [e for e in w.cluster.events if e[1] == "NodeLost"]
    assert lost and "unresponsive" in lost[0][2]


def test_a_bare_pod_already_being_deleted_is_not_created_again() -> None:
    w = NodeWorld()
    w.cluster.graceful_pods = True
    going = w.cluster.create(make_pod("going", node="n1"))
    w.cluster.delete(key_of(going))
    w.tick(11)
    assert w.cluster.of("Pod") == []


def test_renewed_lease_makes_the_node_ready_again() -> None:
    w = NodeWorld()
    w.tick(6)
    assert conditions(w.cluster, "n1")["Ready"][0] == "Unknown"
    w.leases.renew("n1")
    w.tick(1, renew=("n1", "n2"))
    assert conditions(w.cluster, "n1")["Ready"] == ("True", "NodeReady")
    assert "NodeReady" in w.cluster.reasons()


def test_agent_status_is_not_overwritten_while_the_lease_is_fresh() -> None:
    w = NodeWorld()
    obj = w.cluster.get(Key("Node", "", "n1"))
    del obj.node.status.conditions[:]
    obj.node.status.conditions.add(type="Ready", status="False", reason="AgentNotReady")
    w.cluster.update_status(obj)
    w.tick(3, renew=("n1", "n2"))
    assert conditions(w.cluster, "n1")["Ready"] == ("False", "AgentNotReady")


def test_a_node_never_heard_from_gets_a_grace_period_from_startup() -> None:
    w = NodeWorld()
    w.cluster.create(make_node("n3"))
    w.tick(4.6, renew=("n1", "n2"))
    assert conditions(w.cluster, "n3")["Ready"][0] == "True"
    w.tick(1, renew=("n1", "n2"))
    assert conditions(w.cluster, "n3")["Ready"][0] == "Unknown"


def test_next_crossing_is_the_nearest_limit_ahead() -> None:
    assert next_crossing({"n1": 4.25, "n2": 0.5}, (5.0, 10.0)) == 0.75
    assert next_crossing({"n1": 7.0}, (5.0, 10.0)) == 3.0
    assert next_crossing({"n1": 12.0}, (5.0, 10.0)) is None
    assert next_crossing({}, (5.0, 10.0)) is None


def test_the_pass_comes_just_after_a_node_passes_a_limit() -> None:
    """Not up to an interval late: a dead node's pods go at grace + timeout."""
    w = NodeWorld()
    w.cluster.create(make_pod("p", node="n1"))
    w.nodes.step()  # the informer has the nodes and the pod
    w.clock.now += 4.9
    w.leases.renew("n2")
    assert abs(w.nodes.reconcile(TICK) - 0.101) < 1e-9  # n1 is 0.1 s from its grace
    w.clock.now += 5.05
    w.leases.renew("n2")
    assert abs(w.nodes.reconcile(TICK) - 0.051) < 1e-9  # and 0.05 s from eviction
    w.clock.now += 0.051
    w.nodes.step()  # the pass due now evicts, rather than at the next interval
    assert "Evicted" in w.cluster.reasons()
    assert w.nodes.reconcile(TICK) == w.nodes.interval  # n2 is far from its limits


def test_leases_forget_deleted_nodes() -> None:
    w = NodeWorld()
    w.nodes.step()
    w.cluster.delete(Key("Node", "", "n1"))
    w.nodes.step()
    assert w.leases.last_renewal("n1") is None
    assert w.leases.last_renewal("n2") is not None


# --- garbage collection ---


def test_plan_gc_deletes_dependents_of_gone_owners() -> None:
    rs = make_rs()
    kept = make_pod("kept").pod
    kept.metadata.owner_references.append(owner_reference("ReplicaSet", rs.metadata))
    orphaned = make_pod("orphaned").pod
    orphaned.metadata.owner_references.add(kind="ReplicaSet", name="web", uid="old-uid",
                                           controller=True)
    half = make_pod("half").pod
    half.metadata.owner_references.append(owner_reference("ReplicaSet", rs.metadata))
    half.metadata.owner_references.add(kind="Deployment", name="gone", uid="gone-uid")
    actions = plan_gc([wrap(rs), wrap(kept), wrap(orphaned), wrap(half)])
    assert [a.key.name for a in actions if isinstance(a, Delete)] == ["orphaned"]
    (update,) = [a for a in actions if isinstance(a, Update)]
    assert [r.uid for r in update.object.pod.metadata.owner_references] == ["rs-uid"]


def test_deleting_a_deployment_takes_its_replica_sets_and_pods() -> None:
    cluster = FakeCluster()
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    stored = cluster.create(wrap(d))
    rs = make_rs(replicas=2)
    rs.metadata.uid = ""
    rs.metadata.owner_references.append(owner_reference("Deployment", stored.deployment.metadata))
    cluster.create(wrap(rs))
    rs_ctl = ReplicaSetController(cluster, wall=lambda: cluster.now)
    gc = GarbageCollector(cluster)
    rs_ctl.step()
    gc.step()
    assert len(cluster.of("Pod")) == 2 and len(cluster.of("ReplicaSet")) == 1
    cluster.delete(key_of(stored))
    gc.step()
    assert cluster.of("ReplicaSet") == []
    gc.step()
    assert cluster.of("Pod") == []


def test_owner_recreated_under_the_same_name_counts_as_gone() -> None:
    cluster = FakeCluster()
    rs = make_rs()
    rs.metadata.uid = ""
    first = cluster.create(wrap(rs))
    pod = make_pod("p").pod
    pod.metadata.owner_references.append(owner_reference("ReplicaSet",
                                                         first.replica_set.metadata))
    cluster.create(wrap(pod))
    gc = GarbageCollector(cluster)
    gc.step()
    assert len(cluster.of("Pod")) == 1
    cluster.delete(key_of(first))
    cluster.create(wrap(rs))
    gc.step()
    assert cluster.of("Pod") == []


# --- the manager ---


class Exploding(Controller):
    name = "exploding"
    kinds = ("Pod",)

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self.calls = 0

    def keys_for(self, notice):  # type: ignore[no-untyped-def]
        return ()

    def reconcile(self, key: Key) -> float | None:
        return None

    def step(self, timeout: float = 0.0, settle: float = 0.0) -> None:
        self.calls += 1
        raise RuntimeError("boom")


class LockedCluster(FakeCluster):
    """The fake, made safe for the manager's threads."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()

    def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
        value = super().__getattribute__(name)
        if name in {"get", "list", "create", "update", "update_status", "bind", "delete",
                    "event"}:
            lock = super().__getattribute__("lock")

            def locked(*args, **kwargs):  # type: ignore[no-untyped-def]
                with lock:
                    return value(*args, **kwargs)
            return locked
        if name == "watch":
            lock = super().__getattribute__("lock")

            def locked_watch(*args, **kwargs):  # type: ignore[no-untyped-def]
                with lock:
                    w = value(*args, **kwargs)
                nxt = w.next

                def next_locked(timeout=None):  # type: ignore[no-untyped-def]
                    with lock:
                        got = nxt(0)
                    if got is None and timeout:
                        threading.Event().wait(min(timeout, 0.01))
                    return got
                w.next = next_locked
                return w
            return locked_watch
        return value


def test_manager_runs_controllers_in_threads_and_survives_a_failing_one() -> None:
    cluster = LockedCluster()
    manager = ControllerManager(cluster, Leases(), node_grace=60, eviction_timeout=60)
    bad = Exploding(cluster)
    manager.controllers.append(bad)
    rs = make_rs(replicas=2)
    rs.metadata.uid = ""
    cluster.create(wrap(rs))
    stop = threading.Event()
    runner = threading.Thread(target=manager.run, args=(stop,))
    runner.start()
    try:
        for _ in range(500):
            with cluster.lock:
                if len(cluster.of("Pod")) == 2:
                    break
            threading.Event().wait(0.01)
    finally:
        stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive()
    assert len(cluster.of("Pod")) == 2
    assert bad.calls >= 1
