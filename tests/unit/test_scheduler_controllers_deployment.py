"""Deployment controller and the rollout helpers, driven with the
ReplicaSet controller on the fake cluster."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.podium.v1 import apps_pb2, pod_pb2
from scheduler.controllers import (
    HASH_LABEL,
    REVISION_ANNOTATION,
    DeploymentController,
    ReplicaSetController,
    RollbackError,
    RolloutFailed,
    rollback_template,
    rollout_complete,
    rollout_history,
    template_hash,
)
from scheduler.controllers.pods import is_active, is_ready, timestamp
from scheduler.controllers.rollout import surge_and_unavailable
from scheduler.objects import Key, key_of, wrap
from tests.unit.test_scheduler_controllers_fake import FakeCluster

LABELS = {"app": "web"}
KEY = Key("Deployment", "default", "web")


def make_deployment(replicas: int = 3, image: str = "nginx:1", strategy: str = "",
                    surge: str | int | None = None,
                    unavailable: str | int | None = None) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.metadata.namespace = "default"
    d.spec.replicas = replicas
    d.spec.selector.match_labels.update(LABELS)
    d.spec.template.metadata.labels.update(LABELS)
    d.spec.template.spec.containers.add(name="web", image=image)
    d.spec.strategy.type = strategy
    for field, value in (("max_surge", surge), ("max_unavailable", unavailable)):
        target = getattr(d.spec.strategy.rolling_update, field)
        if isinstance(value, int):
            target.int_value = value
        elif isinstance(value, str):
            target.str_value = value
    return d


class World:
    """A fake cluster, both controllers, and a kubelet that readies pods."""

    def __init__(self, d: apps_pb2.Deployment, graceful: bool = False, seed: int = 0) -> None:
        self.cluster = FakeCluster(graceful_pods=graceful)
        self.cluster.create(wrap(d))
        wall = lambda: self.cluster.now  # noqa: E731
        self.deployments = DeploymentController(self.cluster, wall=wall)
        self.replica_sets = ReplicaSetController(self.cluster, wall=wall)
        self.rng = random.Random(seed)

    def deployment(self) -> apps_pb2.Deployment:
        return self.cluster.get(KEY).deployment

    def replica_set_list(self) -> list[apps_pb2.ReplicaSet]:
        return [o.replica_set for o in self.cluster.of("ReplicaSet")]

    def pods(self) -> list[pod_pb2.Pod]:
        return [o.pod for o in self.cluster.of("Pod") if is_active(o.pod)]

    def kubelet(self, share: float = 1.0) -> None:
        for obj in self.cluster.of("Pod"):
            pod = obj.pod
            if pod.metadata.HasField("deletion_timestamp") or pod.status.phase:
                continue
            if self.rng.random() > share:
                continue
            if not pod.spec.node_name:
                obj = self.cluster.bind(key_of(obj), "n1", pod.metadata.resource_version)
            obj.pod.status.phase = "Running"
            obj.pod.status.conditions.add(type="Ready", status="True",
                                          last_transition_time=timestamp(self.cluster.now))
            self.cluster.update_status(obj)

    def step(self, share: float = 1.0) -> None:
        self.deployments.step()
        self.replica_sets.step()
        self.kubelet(share)
        self.cluster.now += 1

    def settle(self, rounds: int = 8) -> None:
        for _ in range(rounds):
            self.step()
            self.cluster.finish_deletions()

    def set_template(self, image: str) -> None:
        obj = self.cluster.get(KEY)
        obj.deployment.spec.template.spec.containers[0].image = image
        self.cluster.update(obj)

    def images(self) -> list[str]:
        return sorted(p.spec.containers[0].image for p in self.pods())


def test_first_rollout_makes_a_hashed_replica_set() -> None:
    w = World(make_deployment())
    w.settle()
    d = w.deployment()
    (rs,) = w.replica_set_list()
    pod_hash = template_hash(d.spec.template)
    assert rs.metadata.name == f"web-{pod_hash}"
    assert rs.metadata.labels[HASH_LABEL] == pod_hash
    assert rs.spec.selector.match_labels[HASH_LABEL] == pod_hash
    assert rs.spec.template.metadata.labels[HASH_LABEL] == pod_hash
    assert rs.metadata.annotations[REVISION_ANNOTATION] == "1"
    assert rs.metadata.owner_references[0].uid == d.metadata.uid
    assert len(w.pods()) == 3
    assert all(p.metadata.name.startswith(rs.metadata.name + "-") for p in w.pods())
    s = d.status
    assert (s.observed_generation, s.replicas, s.updated_replicas, s.ready_replicas,
            s.available_replicas, s.unavailable_replicas) == (1, 3, 3, 3, 3, 0)
    conds = {c.type: (c.status, c.reason) for c in s.conditions}
    assert conds == {"Available": ("True", "MinimumReplicasAvailable"),
                     "Progressing": ("True", "NewReplicaSetAvailable")}
    assert rollout_complete(d) == (True, 'deployment "web" successfully rolled out')
    writes = w.cluster.writes
    w.settle(3)
    assert w.cluster.writes == writes  # a settled deployment writes nothing


@settings(max_examples=25, deadline=None)
@given(replicas=st.integers(1, 6),
       surge=st.sampled_from([None, 0, 1, 2, "50%"]),
       unavailable=st.sampled_from([None, 0, 1, "50%"]),
       seed=st.integers(0, 1000))
def test_rolling_update_keeps_within_surge_and_availability(
        replicas: int, surge: str | int | None, unavailable: str | int | None,
        seed: int) -> None:
    d = make_deployment(replicas, surge=surge, unavailable=unavailable)
    w = World(d, graceful=True, seed=seed)
    w.settle()
    max_surge, max_unavailable = surge_and_unavailable(w.deployment())
    w.set_template("nginx:2")

    def check() -> None:
        pods = w.pods()
        assert len(pods) <= replicas + max_surge
        assert sum(1 for p in pods if is_ready(p)) >= replicas - max_unavailable

    for _ in range(60):
        w.deployments.step()
        check()
        w.replica_sets.step()
        check()
        w.kubelet(share=0.5)
        if w.rng.random() < 0.5:
            w.cluster.finish_deletions()
        w.cluster.now += 1
    w.settle()
    assert w.images() == ["nginx:2"] * replicas
    done, message = rollout_complete(w.deployment())
    assert done, message
    assert [r for r, _ in rollout_history(w.deployment(), w.replica_set_list())] == [1, 2]


def test_recreate_stops_old_pods_before_starting_new_ones() -> None:
    w = World(make_deployment(3, strategy="Recreate"), graceful=True)
    w.settle()
    w.set_template("nginx:2")
    w.step()
    # Old pods are on their way out, nothing new started.
    assert w.pods() == []
    assert len(w.replica_set_list()) == 1
    w.step()
    assert len(w.replica_set_list()) == 1  # still waiting for the old pods to go
    w.cluster.finish_deletions()
    w.settle()
    assert w.images() == ["nginx:2"] * 3
    assert rollout_complete(w.deployment())[0]


def test_rollback_reuses_the_old_replica_set() -> None:
    w = World(make_deployment(2))
    w.settle()
    (first,) = w.replica_set_list()
    w.set_template("nginx:2")
    w.settle()
    template = rollback_template(w.deployment(), w.replica_set_list())
    assert HASH_LABEL not in template.metadata.labels
    assert template.spec.containers[0].image == "nginx:1"
    obj = w.cluster.get(KEY)
    obj.deployment.spec.template.CopyFrom(template)
    w.cluster.update(obj)
    w.settle()
    assert w.images() == ["nginx:1", "nginx:1"]
    by_uid = {rs.metadata.uid: rs for rs in w.replica_set_list()}
    assert len(by_uid) == 2
    assert by_uid[first.metadata.uid].metadata.annotations[REVISION_ANNOTATION] == "3"
    history = rollout_history(w.deployment(), w.replica_set_list())
    assert [(r, t.spec.containers[0].image) for r, t in history] == [
        (2, "nginx:2"), (3, "nginx:1")]
    assert rollback_template(w.deployment(), w.replica_set_list(), 2) \
        .spec.containers[0].image == "nginx:2"
    with pytest.raises(RollbackError, match="revision 7"):
        rollback_template(w.deployment(), w.replica_set_list(), 7)


def test_history_limit_deletes_the_oldest_idle_replica_sets() -> None:
    d = make_deployment(1)
    d.spec.revision_history_limit = 2
    w = World(d)
    w.settle()
    for version in range(2, 7):
        w.set_template(f"nginx:{version}")
        w.settle()
    revisions = sorted(int(rs.metadata.annotations[REVISION_ANNOTATION])
                       for rs in w.replica_set_list())
    assert revisions == [4, 5, 6]
    assert w.images() == ["nginx:6"]


def test_scaling_up_and_down() -> None:
    w = World(make_deployment(3))
    w.settle()
    for replicas in (5, 1, 0, 2):
        obj = w.cluster.get(KEY)
        obj.deployment.spec.replicas = replicas
        w.cluster.update(obj)
        w.settle()
        assert len(w.pods()) == replicas
        assert len(w.replica_set_list()) == 1
        assert w.deployment().status.replicas == replicas


def test_adopts_a_matching_orphan_replica_set_and_reuses_it() -> None:
    w = World(make_deployment(2))
    w.settle()
    (rs_obj,) = w.cluster.of("ReplicaSet")
    rs_obj.replica_set.metadata.ClearField("owner_references")
    w.cluster.update(rs_obj)
    w.settle()
    (rs,) = w.replica_set_list()
    assert rs.metadata.owner_references[0].uid == w.deployment().metadata.uid
    assert len(w.pods()) == 2


def test_progress_deadline_fails_the_rollout() -> None:
    d = make_deployment(2)
    d.spec.progress_deadline_seconds = 30
    w = World(d)
    for _ in range(3):
        w.deployments.step()
        w.replica_sets.step()
    done, message = rollout_complete(w.deployment())
    assert not done
    assert message == ('Waiting for deployment "web" rollout to finish: '
                       "0 of 2 updated replicas are available...")
    w.cluster.now += 31
    w.deployments.clock = lambda: 1e12  # the deadline's requeue is due
    w.deployments.step()
    cond = {c.type: c for c in w.deployment().status.conditions}["Progressing"]
    assert (cond.status, cond.reason) == ("False", "ProgressDeadlineExceeded")
    with pytest.raises(RolloutFailed, match='deployment "web" exceeded its progress deadline'):
        rollout_complete(w.deployment())


def _with_status(**fields: int) -> apps_pb2.Deployment:
    d = make_deployment(3)
    d.metadata.generation = 2
    d.status.observed_generation = 2
    for name, value in fields.items():
        setattr(d.status, name, value)
    return d


def test_rollout_complete_speaks_like_kubectl() -> None:
    d = _with_status()
    d.status.observed_generation = 1
    assert rollout_complete(d) == (False, "Waiting for deployment spec update to be observed...")
    assert rollout_complete(_with_status(updated_replicas=1))[1] == (
        'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas '
        "have been updated...")
    assert rollout_complete(_with_status(updated_replicas=3, replicas=4))[1] == (
        'Waiting for deployment "web" rollout to finish: 1 old replicas are pending '
        "termination...")
    assert rollout_complete(_with_status(updated_replicas=3, replicas=3,
                                         available_replicas=1))[1] == (
        'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas '
        "are available...")


def test_surge_and_unavailable_defaults_and_rounding() -> None:
    assert surge_and_unavailable(make_deployment(3)) == (1, 0)
    assert surge_and_unavailable(make_deployment(10)) == (3, 2)
    assert surge_and_unavailable(make_deployment(4, surge=0, unavailable=0)) == (0, 1)
    assert surge_and_unavailable(make_deployment(4, surge="50%", unavailable="50%")) == (2, 2)
    assert surge_and_unavailable(make_deployment(4, strategy="Recreate")) == (0, 0)


def test_rollback_without_history_is_an_error() -> None:
    d = make_deployment()
    with pytest.raises(RollbackError, match='no rollout history found for deployment "web"'):
        rollback_template(d, [])


def test_template_hash_is_stable_and_sensitive() -> None:
    a = make_deployment().spec.template
    b = make_deployment(image="nginx:2").spec.template
    assert template_hash(a) == template_hash(make_deployment().spec.template)
    assert template_hash(a) != template_hash(b)
    assert template_hash(a) != template_hash(a, collision_count=1)
    assert set(template_hash(a)) <= set("bcdfghjklmnpqrstvwxz2456789")




def test_paused_deployment_scales_but_does_not_roll_out() -> None:
    w = World(make_deployment(2))
    w.settle()
    obj = w.cluster.get(KEY)
    obj.deployment.spec.paused = True
    obj.deployment.spec.replicas = 3
    obj.deployment.spec.template.spec.containers[0].image = "nginx:2"
    w.cluster.update(obj)
    w.settle()
    assert w.images() == ["nginx:1"] * 3
    cond = {c.type: c for c in w.deployment().status.conditions}["Progressing"]
    assert (cond.status, cond.reason) == ("Unknown", "DeploymentPaused")
    obj = w.cluster.get(KEY)
    obj.deployment.spec.paused = False
    w.cluster.update(obj)
    w.settle()
    assert w.images() == ["nginx:2"] * 3


def test_a_name_taken_by_another_template_bumps_the_collision_count() -> None:
    d = make_deployment(1)
    squatter = apps_pb2.ReplicaSet()
    squatter.metadata.name = f"web-{template_hash(d.spec.template)}"
    squatter.metadata.namespace = "default"
    squatter.spec.replicas = 0
    squatter.spec.selector.match_labels["app"] = "other"
    squatter.spec.template.metadata.labels["app"] = "other"
    w = World(d)
    w.cluster.create(wrap(squatter))
    w.settle()
    status = w.deployment().status
    assert status.collision_count == 1
    mine = [rs for rs in w.replica_set_list() if rs.metadata.owner_references]
    assert [rs.metadata.name for rs in mine] == [
        f"web-{template_hash(w.deployment().spec.template, 1)}"]
    assert w.images() == ["nginx:1"]
