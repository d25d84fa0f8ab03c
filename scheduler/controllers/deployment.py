"""Deployment controller: roll a pod template out through ReplicaSets.

`plan_deployment` is the decision, on one Deployment and the ReplicaSets
and pods of its namespace:

1. adopt orphan ReplicaSets its selector matches, release owned ones that
   no longer match;
2. find the new ReplicaSet (same template, or named by the template's
   hash); create it if absent (`<name>-<hash>`, label pod-template-hash in
   its selector and template) with the next revision; a reused one (a
   rollback) gets the next revision too;
3. RollingUpdate: scale the new one up while the pods stay within
   replicas + maxSurge, scale old ones down (unavailable pods first) while
   the available pods stay at least replicas - maxUnavailable; Recreate:
   old ones to 0, wait until their pods are gone, then the new one up;
   paused: scaling only;
4. delete old ReplicaSets at 0 replicas beyond revisionHistoryLimit;
5. status and the Available / Progressing conditions, written only when
   they changed.

Pods are counted from the pods themselves, not from the ReplicaSets'
status, which lags: a ReplicaSet told to shrink still has its pods until
its controller acts, so "pods" below means max(spec.replicas, live pods) and
"available" min(spec.replicas, available pods) — its controller deletes
unavailable pods first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from proto.podium.v1 import apps_pb2, pod_pb2
from scheduler.controllers import labels
from scheduler.controllers.actions import Create, Delete, Emit, Plan, Update, UpdateStatus, apply
from scheduler.controllers.base import Controller
from scheduler.controllers.deployment_status import deadline_in, new_status
from scheduler.controllers.informer import Notice
from scheduler.controllers.pods import (
    controller_ref,
    is_active,
    is_available,
    is_controlled_by,
    is_deleting,
    is_terminal,
    owner_reference,
    wait_for_available,
)
from scheduler.controllers.rollout import (
    DEFAULT_HISTORY_LIMIT,
    HASH_LABEL,
    REVISION_ANNOTATION,
    is_recreate,
    revision_of,
    same_template,
    selector_of,
    surge_and_unavailable,
    template_hash,
    wanted_replicas,
)
from scheduler.objects import Key, key_of, scope, wrap

KIND = "Deployment"


@dataclasses.dataclass
class _Set:
    """One ReplicaSet as the plan sees it, with the changes planned for it."""

    rs: apps_pb2.ReplicaSet
    pods: list[pod_pb2.Pod]  # controlled by it, any state
    min_ready: int
    now: float
    changed: bool = False
    created: bool = False

    @property
    def replicas(self) -> int:
        spec = self.rs.spec
        return spec.replicas if spec.HasField("replicas") else 1

    def scale(self, replicas: int) -> None:
        if replicas != self.replicas:
            self.rs.spec.replicas = replicas
            self.changed = True

    def active(self) -> list[pod_pb2.Pod]:
        return [p for p in self.pods if is_active(p)]

    def running(self) -> int:
        """Pods not yet finished, including those being deleted."""
        return sum(1 for p in self.pods if not is_terminal(p))

    def size(self) -> int:
        return max(self.replicas, len(self.active()))

    def available(self) -> int:
        avail = sum(1 for p in self.active() if is_available(p, self.min_ready, self.now))
        return min(self.replicas, avail)


def _claim(d: apps_pb2.Deployment, replica_sets: Sequence[apps_pb2.ReplicaSet],
           plan: Plan) -> list[apps_pb2.ReplicaSet]:
    selector = selector_of(d)
    uid = d.metadata.uid
    mine: list[apps_pb2.ReplicaSet] = []
    for rs in replica_sets:
        if rs.metadata.namespace != d.metadata.namespace or is_deleting(rs.metadata):
            continue
        ref = controller_ref(rs.metadata)
        fits = labels.matches(selector, rs.metadata.labels)
        if ref is not None and ref.uid == uid:
            if fits:
                mine.append(rs)
            else:
                released = apps_pb2.ReplicaSet()
                released.CopyFrom(rs)
                del released.metadata.owner_references[:]
                released.metadata.owner_references.extend(
                    r for r in rs.metadata.owner_references if r.uid != uid)
                plan.actions.append(Update(wrap(released)))
        elif ref is None and fits:
            adopted = apps_pb2.ReplicaSet()
            adopted.CopyFrom(rs)
            adopted.metadata.owner_references.append(owner_reference(KIND, d.metadata))
            plan.actions.append(Update(wrap(adopted)))
            mine.append(adopted)
    return mine


def new_replica_set(d: apps_pb2.Deployment, replicas: int, revision: int) -> apps_pb2.ReplicaSet:
    """The ReplicaSet for the deployment's current template."""
    pod_hash = template_hash(d.spec.template, d.status.collision_count)
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = f"{d.metadata.name}-{pod_hash}"
    rs.metadata.namespace = d.metadata.namespace
    rs.metadata.labels.update(d.spec.template.metadata.labels)
    rs.metadata.labels[HASH_LABEL] = pod_hash
    rs.metadata.annotations[REVISION_ANNOTATION] = str(revision)
    rs.metadata.owner_references.append(owner_reference(KIND, d.metadata))
    rs.spec.replicas = replicas
    rs.spec.min_ready_seconds = d.spec.min_ready_seconds
    rs.spec.selector.CopyFrom(selector_of(d))
    rs.spec.selector.match_labels[HASH_LABEL] = pod_hash
    rs.spec.template.CopyFrom(d.spec.template)
    rs.spec.template.metadata.labels[HASH_LABEL] = pod_hash
    return rs


def plan_deployment(d: apps_pb2.Deployment, replica_sets: Sequence[apps_pb2.ReplicaSet],
                    pods: Sequence[pod_pb2.Pod], now: float) -> Plan:
    """What to do for `d`, given every ReplicaSet and pod of its namespace."""
    plan = Plan()
    if is_deleting(d.metadata):
        return plan
    min_ready = d.spec.min_ready_seconds

    def view(rs: apps_pb2.ReplicaSet) -> _Set:
        copy = apps_pb2.ReplicaSet()
        copy.CopyFrom(rs)
        return _Set(copy, [p for p in pods if is_controlled_by(p.metadata, rs.metadata.uid)],
                    min_ready, now)

    sets = [view(rs) for rs in _claim(d, replica_sets, plan)]
    if plan.actions:
        # Adopted or released: decide again once those writes are seen.
        plan.wait(0.0)
        return plan
    pod_hash = template_hash(d.spec.template, d.status.collision_count)
    new = next((s for s in sets if same_template(s.rs.spec.template, d.spec.template)), None)
    if new is None:
        new = next((s for s in sets if s.rs.metadata.labels.get(HASH_LABEL) == pod_hash), None)
    if new is None:
        taken = f"{d.metadata.name}-{pod_hash}"
        if any(rs.metadata.name == taken and rs.metadata.namespace == d.metadata.namespace
               for rs in replica_sets):
            # Another template, or another owner, holds the name: hash again.
            return _collision(d, plan)
    old = [s for s in sets if s is not new]
    next_revision = max((revision_of(s.rs) for s in old), default=0) + 1

    if new is not None:
        if revision_of(new.rs) < next_revision:
            new.rs.metadata.annotations[REVISION_ANNOTATION] = str(next_revision)
            new.changed = True
        if new.rs.spec.min_ready_seconds != min_ready:
            new.rs.spec.min_ready_seconds = min_ready
            new.changed = True

    replicas = wanted_replicas(d)
    if d.spec.paused:
        # Scaling only, and only when one ReplicaSet is clearly the one to
        # scale: the only active one, or the latest if none is active.
        active = [s for s in sets if s.replicas > 0]
        if len(active) == 1:
            active[0].scale(replicas)
        elif not active and sets:
            max(sets, key=lambda s: revision_of(s.rs)).scale(replicas)
    elif is_recreate(d):
        new = _recreate(d, new, old, replicas, next_revision, plan)
    else:
        new = _rolling(d, new, old, replicas, next_revision, plan)

    if all(s.replicas == 0 for s in old):
        _clean_history(d, old, plan)
    for s in ([new] if new is not None else []) + old:
        if s.created:
            plan.actions.append(Create(wrap(s.rs)))
            plan.actions.append(Emit(wrap(d), "ScalingReplicaSet",
                                     f"Scaled up replica set {s.rs.metadata.name} "
                                     f"to {s.replicas}"))
        elif s.changed:
            plan.actions.append(Update(wrap(s.rs)))

    status = new_status(d, new.rs if new is not None else None,
                        [s.active() for s in old], new.active() if new else [],
                        _available_pods(sets, min_ready, now), now)
    if status != d.status:
        updated = apps_pb2.Deployment()
        updated.CopyFrom(d)
        updated.status.CopyFrom(status)
        plan.actions.append(UpdateStatus(wrap(updated)))
    plan.wait(wait_for_available([p for s in sets for p in s.active()], min_ready, now))
    plan.wait(deadline_in(d, status, now))
    return plan


def _available_pods(sets: list[_Set], min_ready: int, now: float) -> int:
    return sum(1 for s in sets for p in s.active() if is_available(p, min_ready, now))


def _collision(d: apps_pb2.Deployment, plan: Plan) -> Plan:
    updated = apps_pb2.Deployment()
    updated.CopyFrom(d)
    updated.status.collision_count = d.status.collision_count + 1
    plan.actions.append(UpdateStatus(wrap(updated)))
    plan.wait(0.0)
    return plan


def _create(d: apps_pb2.Deployment, replicas: int, revision: int) -> _Set:
    rs = new_replica_set(d, replicas, revision)
    return _Set(rs, [], d.spec.min_ready_seconds, 0.0, created=True)


def _recreate(d: apps_pb2.Deployment, new: _Set | None, old: list[_Set], replicas: int,
              revision: int, plan: Plan) -> _Set | None:
    if any(s.replicas > 0 for s in old):
        for s in old:
            if s.replicas > 0:
                plan.actions.append(Emit(wrap(d), "ScalingReplicaSet",
                                         f"Scaled down replica set {s.rs.metadata.name} to 0"))
            s.scale(0)
        return new
    if any(s.running() for s in old):
        return new  # the old pods' deletion brings us back
    if new is None:
        return _create(d, replicas, revision)
    new.scale(replicas)
    return new


def _rolling(d: apps_pb2.Deployment, new: _Set | None, old: list[_Set], replicas: int,
             revision: int, plan: Plan) -> _Set:
    surge, unavailable = surge_and_unavailable(d)
    everything = ([new] if new is not None else []) + old
    pods = sum(s.size() for s in everything)
    if new is None:
        new = _create(d, max(min(replicas + surge - pods, replicas), 0), revision)
    elif new.replicas > replicas:
        new.scale(replicas)
    elif new.replicas < replicas:
        up = min(replicas + surge - pods, replicas - new.replicas)
        if up > 0:
            plan.actions.append(Emit(wrap(d), "ScalingReplicaSet",
                                     f"Scaled up replica set {new.rs.metadata.name} "
                                     f"to {new.replicas + up}"))
            new.scale(new.replicas + up)
    _scale_down_old(d, new, old, replicas - unavailable, plan)
    return new


def _scale_down_old(d: apps_pb2.Deployment, new: _Set, old: list[_Set], min_available: int,
                    plan: Plan) -> None:
    if sum(s.replicas for s in old) == 0:
        return
    total = new.replicas + sum(s.replicas for s in old)
    new_unavailable = new.replicas - new.available()
    room = total - min_available - new_unavailable
    if room <= 0:
        return
    oldest_first = sorted(old, key=lambda s: (revision_of(s.rs), s.rs.metadata.name))
    before = {id(s): s.replicas for s in old}
    # First the old pods that are not available anyway.
    for s in oldest_first:
        if room <= 0:
            break
        down = min(s.replicas - s.available(), room)
        if down > 0:
            s.scale(s.replicas - down)
            room -= down
    available = new.available() + sum(s.available() for s in old)
    excess = available - min_available
    for s in oldest_first:
        if excess <= 0:
            break
        down = min(s.replicas, excess)
        if down > 0:
            s.scale(s.replicas - down)
            excess -= down
    for s in old:
        if s.replicas != before[id(s)]:
            plan.actions.append(Emit(wrap(d), "ScalingReplicaSet",
                                     f"Scaled down replica set {s.rs.metadata.name} "
                                     f"to {s.replicas}"))


def _clean_history(d: apps_pb2.Deployment, old: list[_Set], plan: Plan) -> None:
    limit = (d.spec.revision_history_limit if d.spec.HasField("revision_history_limit")
             else DEFAULT_HISTORY_LIMIT)
    extra = len(old) - max(limit, 0)
    for s in sorted(old, key=lambda s: revision_of(s.rs))[:max(extra, 0)]:
        if s.replicas == 0 and not s.pods and not s.changed:
            plan.actions.append(Delete(key_of(wrap(s.rs))))


class DeploymentController(Controller):
    name = "deployment"
    kinds = ("Deployment", "ReplicaSet", "Pod")

    def keys_for(self, notice: Notice) -> Iterable[Key]:
        keys: list[Key] = []
        for obj in (notice.object, notice.old):
            if obj is None:
                continue
            field = obj.WhichOneof("kind")
            if field == "deployment":
                keys.append(key_of(obj))
            elif field == "replica_set":
                keys.extend(self._deployments_of(obj.replica_set))
            elif field == "pod":
                ref = controller_ref(obj.pod.metadata)
                if ref is not None and ref.kind == "ReplicaSet":
                    rs = self.informer.get(Key("ReplicaSet",
                                               scope("Pod", obj.pod.metadata.namespace),
                                               ref.name))
                    if rs is not None:
                        keys.extend(self._deployments_of(rs.replica_set))
        return keys

    def _deployments_of(self, rs: apps_pb2.ReplicaSet) -> list[Key]:
        ns = scope("ReplicaSet", rs.metadata.namespace)
        ref = controller_ref(rs.metadata)
        if ref is not None:
            return [Key(KIND, ns, ref.name)] if ref.kind == KIND else []
        return [key_of(o) for o in self.informer.objects(KIND, ns)
                if labels.matches(selector_of(o.deployment), rs.metadata.labels)]

    def resync_keys(self) -> Iterable[Key]:
        return [key_of(obj) for obj in self.informer.objects(KIND)]

    def reconcile(self, key: Key) -> float | None:
        obj = self.informer.get(key)
        if obj is None:
            return None
        rss = [o.replica_set for o in self.informer.objects("ReplicaSet", key.namespace)]
        pods = [o.pod for o in self.informer.objects("Pod", key.namespace)]
        plan = plan_deployment(obj.deployment, rss, pods, self.wall())
        apply(self.cluster, self.informer, plan.actions)
        if any(isinstance(a, Create | Update | Delete) for a in plan.actions):
            plan.wait(0.0)
        return plan.requeue_after
