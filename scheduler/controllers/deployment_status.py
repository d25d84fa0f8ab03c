"""A Deployment's status and its Available / Progressing conditions.

Progressing, as in Kubernetes: True "ReplicaSetUpdated" while pods move
(its last_update_time is the last progress), True "NewReplicaSetAvailable"
once every wanted pod runs the new template and is available, False
"ProgressDeadlineExceeded" when progressDeadlineSeconds pass without
progress, Unknown "DeploymentPaused" while paused. Available is True when
at least replicas - maxUnavailable pods are available.
"""

from __future__ import annotations

from collections.abc import Sequence

from proto.podium.v1 import apps_pb2, pod_pb2
from scheduler.controllers.pods import is_ready, seconds, timestamp
from scheduler.controllers.rollout import (
    DEFAULT_PROGRESS_DEADLINE,
    surge_and_unavailable,
    wanted_replicas,
)

UPDATED = "ReplicaSetUpdated"
AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"


def _find(conds: Sequence[apps_pb2.DeploymentCondition],
          type: str) -> apps_pb2.DeploymentCondition | None:
    return next((c for c in conds if c.type == type), None)


def _set(status: apps_pb2.DeploymentStatus, type: str, value: str, reason: str,
         message: str, now: float, touch: bool = False) -> None:
    """Sets a condition; its times move only when it changes (or `touch`)."""
    existing = _find(status.conditions, type)
    if (existing is not None and not touch and existing.status == value
            and existing.reason == reason and existing.message == message):
        return
    cond = apps_pb2.DeploymentCondition(type=type, status=value, reason=reason, message=message)
    cond.last_update_time.CopyFrom(timestamp(now))
    if existing is not None and existing.status == value:
        cond.last_transition_time.CopyFrom(existing.last_transition_time)
    else:
        cond.last_transition_time.CopyFrom(timestamp(now))
    if existing is None:
        status.conditions.append(cond)
    else:
        existing.CopyFrom(cond)


def progress_deadline(d: apps_pb2.Deployment) -> int:
    spec = d.spec
    return (spec.progress_deadline_seconds if spec.HasField("progress_deadline_seconds")
            else DEFAULT_PROGRESS_DEADLINE)


def new_status(d: apps_pb2.Deployment, new_rs: apps_pb2.ReplicaSet | None,
               old_pods: Sequence[Sequence[pod_pb2.Pod]], new_pods: Sequence[pod_pb2.Pod],
               available: int, now: float) -> apps_pb2.DeploymentStatus:
    """The status `d` should have, from the live pods of its old ReplicaSets
    and of the new one, and how many of them are available."""
    every = [p for pods in old_pods for p in pods] + list(new_pods)
    wanted = wanted_replicas(d)
    status = apps_pb2.DeploymentStatus(
        observed_generation=d.metadata.generation,
        replicas=len(every),
        updated_replicas=len(new_pods),
        ready_replicas=sum(1 for p in every if is_ready(p)),
        available_replicas=available,
        unavailable_replicas=max(wanted - available, 0),
    )
    if d.status.HasField("collision_count"):
        status.collision_count = d.status.collision_count
    status.conditions.extend(d.status.conditions)

    _, max_unavailable = surge_and_unavailable(d)
    if available >= wanted - max_unavailable:
        _set(status, "Available", "True", "MinimumReplicasAvailable",
             "Deployment has minimum availability.", now)
    else:
        _set(status, "Available", "False", "MinimumReplicasUnavailable",
             "Deployment does not have minimum availability.", now)

    name = new_rs.metadata.name if new_rs is not None else d.metadata.name
    old = d.status
    complete = (status.updated_replicas == wanted and status.replicas == wanted
                and available >= wanted)
    progressed = (d.metadata.generation != old.observed_generation
                  or status.updated_replicas > old.updated_replicas
                  or status.replicas - status.updated_replicas
                  < old.replicas - old.updated_replicas
                  or status.ready_replicas > old.ready_replicas
                  or status.available_replicas > old.available_replicas)
    current = _find(status.conditions, "Progressing")
    if d.spec.paused:
        _set(status, "Progressing", "Unknown", PAUSED, "Deployment is paused", now)
    elif complete:
        _set(status, "Progressing", "True", AVAILABLE,
             f'ReplicaSet "{name}" has successfully progressed.', now)
    elif progressed or current is None or current.reason == PAUSED:
        _set(status, "Progressing", "True", UPDATED, f'ReplicaSet "{name}" is progressing.',
             now, touch=True)
    elif (current.status == "True" and current.reason == UPDATED
          and now - seconds(current.last_update_time) > progress_deadline(d)):
        _set(status, "Progressing", "False", TIMED_OUT,
             f'ReplicaSet "{name}" has timed out progressing.', now)
    return status


def deadline_in(d: apps_pb2.Deployment, status: apps_pb2.DeploymentStatus,
                now: float) -> float | None:
    """Seconds until a rollout in progress times out (to look again then)."""
    cond = _find(status.conditions, "Progressing")
    if cond is None or cond.status != "True" or cond.reason != UPDATED:
        return None
    left = seconds(cond.last_update_time) + progress_deadline(d) - now
    return max(left, 0.0) + 0.01
