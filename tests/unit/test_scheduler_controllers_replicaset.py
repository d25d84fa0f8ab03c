"""ReplicaSet controller: the decision on plain objects, then the runner on
the fake cluster (with hypothesis for random scaling and pod deaths)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proto.podium.v1 import apps_pb2, cluster_pb2, pod_pb2
from scheduler.controllers import (
    Create,
    Delete,
    ReplicaSetController,
    Update,
    UpdateStatus,
    plan_replica_set,
)
from scheduler.controllers.pods import is_active, is_controlled_by, owner_reference, timestamp
from scheduler.controllers.replicaset import deletion_order
from scheduler.objects import Key, key_of, wrap
from tests.unit.test_scheduler_controllers_fake import FakeCluster, make_pod

NOW = 1_700_000_000.0
LABELS = {"app": "web"}


def make_rs(name: str = "web", replicas: int = 3, uid: str = "rs-uid") -> apps_pb2.ReplicaSet:
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = name
    rs.metadata.namespace = "default"
    rs.metadata.uid = uid
    rs.metadata.generation = 1
    rs.spec.replicas = replicas
    rs.spec.selector.match_labels.update(LABELS)
    rs.spec.template.metadata.labels.update(LABELS)
    rs.spec.template.spec.containers.add(name="c", image="nginx")
    return rs


def owned(rs: apps_pb2.ReplicaSet, name: str, *, node: str = "", phase: str = "",
          ready: bool = False, created: float = NOW - 100) -> pod_pb2.Pod:
    pod = make_pod(name, LABELS, node).pod
    pod.metadata.uid = f"uid-{name}"
    pod.metadata.creation_timestamp.CopyFrom(timestamp(created))
    pod.metadata.owner_references.append(owner_reference("ReplicaSet", rs.metadata))
    pod.status.phase = phase
    if ready:
        pod.status.conditions.add(type="Ready", status="True",
                                  last_transition_time=timestamp(created + 1))
    return pod


def of_type(actions: list, kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def test_too_few_pods_are_created_from_the_template() -> None:
    rs = make_rs(replicas=2)
    plan = plan_replica_set(rs, [owned(rs, "web-a", node="n1", phase="Running")], NOW)
    creates = of_type(plan.actions, Create)
    assert len(creates) == 1
    pod = creates[0].object.pod
    assert pod.metadata.generate_name == "web-"
    assert dict(pod.metadata.labels) == LABELS
    assert is_controlled_by(pod.metadata, "rs-uid")
    assert pod.spec.containers[0].image == "nginx"


def test_extras_go_cheapest_first() -> None:
    rs = make_rs(replicas=1)
    pods = [
        owned(rs, "ready-old", node="n1", phase="Running", ready=True, created=NOW - 500),
        owned(rs, "ready-new", node="n1", phase="Running", ready=True, created=NOW - 50),
        owned(rs, "unready", node="n1", phase="Running"),
        owned(rs, "unbound", phase="Pending"),
    ]
    assert [p.metadata.name for p in deletion_order(pods)] == [
        "unbound", "unready", "ready-new", "ready-old"]
    plan = plan_replica_set(rs, pods, NOW)
    assert sorted(a.key.name for a in of_type(plan.actions, Delete)) == [
        "ready-new", "unbound", "unready"]


def test_finished_pods_are_deleted_and_replaced() -> None:
    rs = make_rs(replicas=2)
    pods = [owned(rs, "ok", node="n1", phase="Running", ready=True),
            owned(rs, "failed", node="n1", phase="Failed")]
    plan = plan_replica_set(rs, pods, NOW)
    assert [a.key.name for a in of_type(plan.actions, Delete)] == ["failed"]
    assert len(of_type(plan.actions, Create)) == 1


def test_pods_being_deleted_do_not_count() -> None:
    rs = make_rs(replicas=1)
    going = owned(rs, "going", node="n1", phase="Running", ready=True)
    going.metadata.deletion_timestamp.CopyFrom(timestamp(NOW))
    plan = plan_replica_set(rs, [going], NOW)
    assert len(of_type(plan.actions, Create)) == 1
    assert not of_type(plan.actions, Delete)


def test_orphans_are_adopted_and_strays_released() -> None:
    rs = make_rs(replicas=2)
    orphan = make_pod("orphan", LABELS, "n1").pod
    stray = owned(rs, "stray", node="n1")
    stray.metadata.labels["app"] = "other"
    other = make_pod("other-owner", LABELS).pod
    other.metadata.owner_references.add(kind="ReplicaSet", name="x", uid="x", controller=True)
    plan = plan_replica_set(rs, [orphan, stray, other], NOW)
    updates = {a.object.pod.metadata.name: a.object.pod for a in of_type(plan.actions, Update)}
    assert is_controlled_by(updates["orphan"].metadata, "rs-uid")
    assert not updates["stray"].metadata.owner_references
    assert "other-owner" not in updates
    assert len(of_type(plan.actions, Create)) == 1  # orphan counts, stray does not


def test_status_is_written_only_when_it_changes() -> None:
    rs = make_rs(replicas=2)
    rs.metadata.generation = 4
    rs.spec.min_ready_seconds = 10
    pods = [owned(rs, "a", node="n1", phase="Running", ready=True, created=NOW - 100),
            owned(rs, "b", node="n1", phase="Running", ready=True, created=NOW - 5)]
    plan = plan_replica_set(rs, pods, NOW)
    (write,) = of_type(plan.actions, UpdateStatus)
    status = write.object.replica_set.status
    assert (status.replicas, status.fully_labeled_replicas, status.ready_replicas,
            status.available_replicas, status.observed_generation) == (2, 2, 2, 1, 4)
    assert plan.requeue_after is not None and 5 < plan.requeue_after <= 6
    rs.status.CopyFrom(status)
    assert plan_replica_set(rs, pods, NOW).actions == []


def test_deleting_replica_set_is_left_alone() -> None:
    rs = make_rs()
    rs.metadata.deletion_timestamp.CopyFrom(timestamp(NOW))
    assert plan_replica_set(rs, [], NOW).actions == []


# --- the runner on the fake cluster ---


def kubelet(cluster: FakeCluster, nodes: tuple[str, ...] = ("n1", "n2")) -> None:
    """Binds pending pods and makes them Running and Ready."""
    for i, obj in enumerate(cluster.of("Pod")):
        pod = obj.pod
        if pod.metadata.HasField("deletion_timestamp") or pod.status.phase:
            continue
        if not pod.spec.node_name:
            obj = cluster.bind(key_of(obj), nodes[i % len(nodes)], pod.metadata.resource_version)
        obj.pod.status.phase = "Running"
        obj.pod.status.conditions.add(type="Ready", status="True",
                                      last_transition_time=timestamp(cluster.now))
        cluster.update_status(obj)


def live_pods(cluster: FakeCluster, uid: str) -> list[pod_pb2.Pod]:
    return [o.pod for o in cluster.of("Pod")
            if is_active(o.pod) and is_controlled_by(o.pod.metadata, uid)]


def store_rs(cluster: FakeCluster, replicas: int) -> cluster_pb2.Object:
    rs = make_rs(replicas=replicas)
    rs.metadata.uid = ""
    return cluster.create(wrap(rs))


def settle(controller: ReplicaSetController, cluster: FakeCluster, rounds: int = 4) -> None:
    for _ in range(rounds):
        controller.step()
        kubelet(cluster)
        cluster.now += 1


def test_runner_keeps_replicas_and_reports_status() -> None:
    cluster = FakeCluster()
    stored = store_rs(cluster, 3)
    ctl = ReplicaSetController(cluster, wall=lambda: cluster.now)
    settle(ctl, cluster)
    uid = stored.replica_set.metadata.uid
    assert len(live_pods(cluster, uid)) == 3
    names = [p.metadata.name for p in live_pods(cluster, uid)]
    assert all(n.startswith("web-") and len(n) == len("web-") + 5 for n in names)
    status = cluster.get(key_of(stored)).replica_set.status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (3, 3, 3)
    writes = cluster.writes
    settle(ctl, cluster)
    assert cluster.writes == writes  # nothing changes, nothing is written


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.booleans()),
                min_size=1, max_size=8))
def test_replicas_converge_under_scaling_and_deaths(
        moves: list[tuple[int, int, bool]]) -> None:
    cluster = FakeCluster(graceful_pods=True)
    stored = store_rs(cluster, 2)
    key = key_of(stored)
    uid = stored.replica_set.metadata.uid
    ctl = ReplicaSetController(cluster, wall=lambda: cluster.now)
    for replicas, deaths, finish in moves:
        rs = cluster.get(key)
        rs.replica_set.spec.replicas = replicas
        cluster.update(rs)
        ctl.step()
        kubelet(cluster)
        for obj in cluster.of("Pod")[:deaths]:
            if obj.pod.status.phase == "Running":
                obj.pod.status.phase = "Failed"
                cluster.update_status(obj)
        if finish:
            cluster.finish_deletions()
        # Never more live pods than wanted after a step.
        assert len(live_pods(cluster, uid)) <= max(replicas, 0) + deaths
    for _ in range(4):
        ctl.step()
        cluster.finish_deletions()
        kubelet(cluster)
    final = cluster.get(key).replica_set
    assert len(live_pods(cluster, uid)) == final.spec.replicas
    assert not [o for o in cluster.of("Pod") if o.pod.status.phase == "Failed"]
    assert final.status.replicas == final.spec.replicas


def test_runner_survives_a_lost_watch() -> None:
    cluster = FakeCluster()
    stored = store_rs(cluster, 2)
    ctl = ReplicaSetController(cluster, wall=lambda: cluster.now)
    settle(ctl, cluster)
    cluster.drop_watches()
    cluster.delete(Key("Pod", "default", live_pods(cluster, stored.replica_set.metadata.uid)[0]
                       .metadata.name))
    settle(ctl, cluster)
    assert len(live_pods(cluster, stored.replica_set.metadata.uid)) == 2
    assert ctl.informer.relists == 2
