"""ReplicaSet controller: keep spec.replicas pods of the template running.

`plan_replica_set` is the decision, on one ReplicaSet and the pods of its
namespace:

- adopt orphan pods its selector matches (owner reference added), release
  pods it owns that no longer match (reference removed);
- finished pods it owns (phase Failed or Succeeded: their restartPolicy gave
  up) are deleted, and, like pods being deleted, no longer count;
- too few: create pods from the template (name `<rs>-<5 random>` through
  metadata.generate_name); too many: delete the cheapest first — unbound,
  then Pending, not ready, ready the shortest time, newest;
- status (replicas, fully_labeled_replicas, ready_replicas,
  available_replicas, observed_generation), written only when it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from proto.podium.v1 import apps_pb2, pod_pb2
from scheduler.controllers import labels
from scheduler.controllers.actions import (
    Create,
    Delete,
    Emit,
    Plan,
    Update,
    UpdateStatus,
    apply,
)
from scheduler.controllers.base import Controller
from scheduler.controllers.informer import Notice
from scheduler.controllers.pods import (
    controller_ref,
    is_active,
    is_available,
    is_controlled_by,
    is_deleting,
    is_ready,
    is_terminal,
    owner_reference,
    ready_condition,
    seconds,
    wait_for_available,
)
from scheduler.objects import Key, key_of, scope, wrap

KIND = "ReplicaSet"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "": 1, "Running": 2}


def wanted_replicas(rs: apps_pb2.ReplicaSet) -> int:
    return rs.spec.replicas if rs.spec.HasField("replicas") else 1


def owned_pods(rs: apps_pb2.ReplicaSet, pods: Iterable[pod_pb2.Pod]) -> list[pod_pb2.Pod]:
    return [p for p in pods if is_controlled_by(p.metadata, rs.metadata.uid)]


def pod_from_template(rs: apps_pb2.ReplicaSet) -> pod_pb2.Pod:
    tmpl = rs.spec.template
    pod = pod_pb2.Pod()
    pod.metadata.generate_name = f"{rs.metadata.name}-"
    pod.metadata.namespace = rs.metadata.namespace
    pod.metadata.labels.update(tmpl.metadata.labels)
    pod.metadata.annotations.update(tmpl.metadata.annotations)
    pod.metadata.owner_references.append(owner_reference(KIND, rs.metadata))
    pod.spec.CopyFrom(tmpl.spec)
    return pod


def deletion_order(pods: Sequence[pod_pb2.Pod]) -> list[pod_pb2.Pod]:
    """Cheapest to lose first: unbound, Pending, not ready, ready the
    shortest, newest."""
    def rank(pod: pod_pb2.Pod) -> tuple[int, int, int, float, float]:
        cond = ready_condition(pod)
        ready_since = seconds(cond.last_transition_time) if is_ready(pod) and cond else 0.0
        return (1 if pod.spec.node_name else 0,
                _PHASE_RANK.get(pod.status.phase, 1),
                1 if is_ready(pod) else 0,
                -ready_since,
                -seconds(pod.metadata.creation_timestamp))
    return sorted(pods, key=rank)


def _status(rs: apps_pb2.ReplicaSet, active: list[pod_pb2.Pod],
            now: float) -> apps_pb2.ReplicaSetStatus:
    tmpl_labels = rs.spec.template.metadata.labels
    status = apps_pb2.ReplicaSetStatus()
    status.CopyFrom(rs.status)
    status.replicas = len(active)
    status.fully_labeled_replicas = sum(
        1 for p in active if all(p.metadata.labels.get(k) == v for k, v in tmpl_labels.items()))
    status.ready_replicas = sum(1 for p in active if is_ready(p))
    status.available_replicas = sum(
        1 for p in active if is_available(p, rs.spec.min_ready_seconds, now))
    status.observed_generation = rs.metadata.generation
    return status


def plan_replica_set(rs: apps_pb2.ReplicaSet, pods: Sequence[pod_pb2.Pod],
                     now: float) -> Plan:
    """What to do for `rs`, given every pod of its namespace."""
    plan = Plan()
    if is_deleting(rs.metadata):
        return plan
    selector = rs.spec.selector
    mine: list[pod_pb2.Pod] = []
    for pod in pods:
        if pod.metadata.namespace != rs.metadata.namespace:
            continue
        ref = controller_ref(pod.metadata)
        fits = not labels.is_empty(selector) and labels.matches(selector, pod.metadata.labels)
        if ref is not None and ref.uid == rs.metadata.uid:
            if fits or is_deleting(pod.metadata):
                mine.append(pod)
            else:
                plan.actions.append(Update(wrap(_released(pod, rs.metadata.uid))))
        elif ref is None and fits and not is_deleting(pod.metadata):
            adopted = pod_pb2.Pod()
            adopted.CopyFrom(pod)
            adopted.metadata.owner_references.append(owner_reference(KIND, rs.metadata))
            plan.actions.append(Update(wrap(adopted)))
            mine.append(adopted)

    for pod in mine:
        if is_terminal(pod) and not is_deleting(pod.metadata):
            plan.actions.append(Emit(wrap(rs), "SuccessfulDelete",
                                     f"Deleted pod: {pod.metadata.name} "
                                     f"(finished: {pod.status.phase})"))
            plan.actions.append(Delete(key_of(wrap(pod))))
    active = [p for p in mine if is_active(p)]
    diff = len(active) - wanted_replicas(rs)
    if diff < 0:
        for _ in range(-diff):
            plan.actions.append(Create(wrap(pod_from_template(rs))))
        plan.actions.append(Emit(wrap(rs), "SuccessfulCreate", f"Created {-diff} pod(s)"))
    elif diff > 0:
        for pod in deletion_order(active)[:diff]:
            plan.actions.append(Delete(key_of(wrap(pod))))
            plan.actions.append(Emit(wrap(rs), "SuccessfulDelete",
                                     f"Deleted pod: {pod.metadata.name}"))

    status = _status(rs, active, now)
    if status != rs.status:
        updated = apps_pb2.ReplicaSet()
        updated.CopyFrom(rs)
        updated.status.CopyFrom(status)
        plan.actions.append(UpdateStatus(wrap(updated)))
    plan.wait(wait_for_available(active, rs.spec.min_ready_seconds, now))
    return plan


def _released(pod: pod_pb2.Pod, uid: str) -> pod_pb2.Pod:
    out = pod_pb2.Pod()
    out.CopyFrom(pod)
    del out.metadata.owner_references[:]
    out.metadata.owner_references.extend(
        r for r in pod.metadata.owner_references if r.uid != uid)
    return out


class ReplicaSetController(Controller):
    name = "replicaset"
    kinds = ("ReplicaSet", "Pod")

    def keys_for(self, notice: Notice) -> Iterable[Key]:
        obj = notice.object
        field = obj.WhichOneof("kind")
        if field == "replica_set":
            return [key_of(obj)]
        if field != "pod":
            return []
        return self._owners_of(obj.pod, notice.old.pod if notice.old is not None else None)

    def _owners_of(self, pod: pod_pb2.Pod, old: pod_pb2.Pod | None) -> list[Key]:
        ns = scope("Pod", pod.metadata.namespace)
        keys: list[Key] = []
        for p in (pod, old):
            if p is None:
                continue
            ref = controller_ref(p.metadata)
            if ref is not None:
                if ref.kind == KIND:
                    keys.append(Key(KIND, ns, ref.name))
                continue
            # An orphan: every ReplicaSet that might adopt it.
            for obj in self.informer.objects(KIND, ns):
                sel = obj.replica_set.spec.selector
                if not labels.is_empty(sel) and labels.matches(sel, p.metadata.labels):
                    keys.append(key_of(obj))
        return keys

    def resync_keys(self) -> Iterable[Key]:
        return [key_of(obj) for obj in self.informer.objects(KIND)]

    def reconcile(self, key: Key) -> float | None:
        obj = self.informer.get(key)
        if obj is None:
            return None
        pods = [o.pod for o in self.informer.objects("Pod", key.namespace)]
        plan = plan_replica_set(obj.replica_set, pods, self.wall())
        apply(self.cluster, self.informer, plan.actions)
        if any(isinstance(a, Create | Delete) for a in plan.actions):
            # The status above counted the pods before these writes.
            plan.wait(0.0)
        return plan.requeue_after


