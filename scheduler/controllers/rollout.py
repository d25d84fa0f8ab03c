"""Revisions of a Deployment, as its ReplicaSets record them.

Each ReplicaSet of a Deployment holds one pod template, named by a hash of
that template (`<deployment>-<hash>`, label `pod-template-hash`) and carries
the revision it was last rolled out as (annotation
`deployment.kubernetes.io/revision`). The pure helpers here are what
`podium rollout history|undo|status` uses:

    rollout_history(deployment, replica_sets) -> [(revision, template)]
    rollback_template(deployment, replica_sets, to_revision=0) -> template
    rollout_complete(deployment) -> (done, message)   kubectl's words

Errors: RolloutError, with RollbackError (no such revision) and
RolloutFailed (the progress deadline passed) under it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proto.podium.v1 import apps_pb2, meta_pb2, pod_pb2
from scheduler.controllers.pods import is_controlled_by

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
DEFAULT_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE = 600

# No vowels, so a hash never spells a word; no 0/1/3 that read as letters.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


class RolloutError(ValueError):
    """A rollout question that has no answer; the message says why."""


class RollbackError(RolloutError):
    pass


class RolloutFailed(RolloutError):
    pass


def template_hash(template: pod_pb2.PodTemplateSpec, collision_count: int = 0) -> str:
    """A short stable name for a pod template (FNV-1a of its deterministic
    encoding, in an alphabet without vowels)."""
    data = template.SerializeToString(deterministic=True)
    if collision_count:
        data += collision_count.to_bytes(4, "big")
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    out = ""
    while True:
        value, digit = divmod(value, len(_ALPHABET))
        out += _ALPHABET[digit]
        if value == 0:
            return out


def strip_hash(template: pod_pb2.PodTemplateSpec) -> pod_pb2.PodTemplateSpec:
    out = pod_pb2.PodTemplateSpec()
    out.CopyFrom(template)
    out.metadata.labels.pop(HASH_LABEL, None)
    return out


def same_template(a: pod_pb2.PodTemplateSpec, b: pod_pb2.PodTemplateSpec) -> bool:
    """Equal apart from the pod-template-hash label."""
    return strip_hash(a) == strip_hash(b)


def revision_of(rs: apps_pb2.ReplicaSet) -> int:
    value = rs.metadata.annotations.get(REVISION_ANNOTATION, "")
    return int(value) if value.isdigit() else 0


def wanted_replicas(deployment: apps_pb2.Deployment) -> int:
    spec = deployment.spec
    return spec.replicas if spec.HasField("replicas") else 1


def selector_of(deployment: apps_pb2.Deployment) -> meta_pb2.LabelSelector:
    """The deployment's selector; its template's labels if it has none."""
    sel = deployment.spec.selector
    if sel.match_labels or sel.match_expressions:
        return sel
    return meta_pb2.LabelSelector(match_labels=dict(deployment.spec.template.metadata.labels))


def is_recreate(deployment: apps_pb2.Deployment) -> bool:
    return deployment.spec.strategy.type == "Recreate"


def _resolve(value: meta_pb2.IntOrString, total: int, round_up: bool) -> int:
    which = value.WhichOneof("value")
    if which is None:
        percent = 25.0
    elif which == "int_value":
        return max(value.int_value, 0)
    else:
        text = value.str_value.strip()
        if not text.endswith("%") or not text[:-1].strip().isdigit():
            raise RolloutError(f"{text!r} is neither a count nor a percentage like '25%'")
        percent = float(text[:-1])
    exact = percent * total / 100
    return max(math.ceil(exact) if round_up else math.floor(exact), 0)


def surge_and_unavailable(deployment: apps_pb2.Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts: percentages of replicas,
    surge rounded up and unavailable down; never both 0. Recreate: (0, 0)."""
    if is_recreate(deployment):
        return 0, 0
    replicas = wanted_replicas(deployment)
    ru = deployment.spec.strategy.rolling_update
    surge = _resolve(ru.max_surge, replicas, round_up=True)
    unavailable = _resolve(ru.max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def owned_replica_sets(deployment: apps_pb2.Deployment,
                       replica_sets: Sequence[apps_pb2.ReplicaSet]) -> list[apps_pb2.ReplicaSet]:
    return [rs for rs in replica_sets if is_controlled_by(rs.metadata, deployment.metadata.uid)]


def rollout_history(deployment: apps_pb2.Deployment, replica_sets: Sequence[apps_pb2.ReplicaSet],
                    ) -> list[tuple[int, pod_pb2.PodTemplateSpec]]:
    """(revision, template) of each ReplicaSet the deployment owns, oldest first."""
    found = [(revision_of(rs), rs.spec.template)
             for rs in owned_replica_sets(deployment, replica_sets) if revision_of(rs) > 0]
    return sorted(found, key=lambda item: item[0])


def rollback_template(deployment: apps_pb2.Deployment,
                      replica_sets: Sequence[apps_pb2.ReplicaSet],
                      to_revision: int = 0) -> pod_pb2.PodTemplateSpec:
    """The template to put back into the deployment for `rollout undo`:
    revision `to_revision`, or 0 for the one before the latest."""
    name = deployment.metadata.name
    history = rollout_history(deployment, replica_sets)
    if not history:
        raise RollbackError(f'no rollout history found for deployment "{name}"')
    if to_revision == 0:
        if len(history) < 2:
            raise RollbackError(f'no previous revision to roll back to for deployment "{name}"')
        return strip_hash(history[-2][1])
    for revision, template in history:
        if revision == to_revision:
            return strip_hash(template)
    raise RollbackError(f'unable to find revision {to_revision} of deployment "{name}" '
                        f"(known: {', '.join(str(r) for r, _ in history)})")


def rollout_complete(deployment: apps_pb2.Deployment) -> tuple[bool, str]:
    """Whether the rollout is done, and what `rollout status` prints.
    RolloutFailed once the deployment exceeded its progress deadline."""
    name = deployment.metadata.name
    status = deployment.status
    if deployment.metadata.generation > status.observed_generation:
        return False, "Waiting for deployment spec update to be observed..."
    for cond in status.conditions:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            raise RolloutFailed(f'deployment "{name}" exceeded its progress deadline')
    replicas = wanted_replicas(deployment)
    if status.updated_replicas < replicas:
        return False, (f'Waiting for deployment "{name}" rollout to finish: '
                       f"{status.updated_replicas} out of {replicas} new replicas "
                       "have been updated...")
    if status.replicas > status.updated_replicas:
        return False, (f'Waiting for deployment "{name}" rollout to finish: '
                       f"{status.replicas - status.updated_replicas} old replicas "
                       "are pending termination...")
    if status.available_replicas < status.updated_replicas:
        return False, (f'Waiting for deployment "{name}" rollout to finish: '
                       f"{status.available_replicas} of {status.updated_replicas} "
                       "updated replicas are available...")
    return True, f'deployment "{name}" successfully rolled out'
