"""Facts about pods and owner references that several controllers read.

Pure functions of the messages; `now` is always a Unix time in seconds,
passed in so that tests choose it.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from proto.podium.v1 import meta_pb2, pod_pb2

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def controller_ref(meta: meta_pb2.ObjectMeta) -> meta_pb2.OwnerReference | None:
    """The owner reference marked controller=true, if any."""
    for ref in meta.owner_references:
        if ref.HasField("controller") and ref.controller:
            return ref
    return None


def owner_reference(kind: str, meta: meta_pb2.ObjectMeta) -> meta_pb2.OwnerReference:
    """A controller reference to the object `meta` describes."""
    return meta_pb2.OwnerReference(
        api_version="apps/v1", kind=kind, name=meta.name, uid=meta.uid,
        controller=True, block_owner_deletion=True)


def is_controlled_by(meta: meta_pb2.ObjectMeta, uid: str) -> bool:
    ref = controller_ref(meta)
    return ref is not None and ref.uid == uid


def is_deleting(meta: meta_pb2.ObjectMeta) -> bool:
    return meta.HasField("deletion_timestamp")


def is_terminal(pod: pod_pb2.Pod) -> bool:
    return pod.status.phase in TERMINAL_PHASES


def is_active(pod: pod_pb2.Pod) -> bool:
    """Counts towards a controller's replicas: neither finished nor going."""
    return not is_deleting(pod.metadata) and not is_terminal(pod)


def ready_condition(pod: pod_pb2.Pod) -> pod_pb2.PodCondition | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond
    return None


def is_ready(pod: pod_pb2.Pod) -> bool:
    cond = ready_condition(pod)
    return cond is not None and cond.status == "True"


def available_at(pod: pod_pb2.Pod, min_ready_seconds: int) -> float | None:
    """When the pod becomes (or became) available; None while it is not ready.

    With min_ready_seconds > 0 a Ready condition without a transition time
    never counts, as in Kubernetes: nothing says how long it has been ready.
    """
    cond = ready_condition(pod)
    if cond is None or cond.status != "True":
        return None
    if min_ready_seconds <= 0:
        return 0.0
    if not cond.HasField("last_transition_time"):
        return None
    return seconds(cond.last_transition_time) + min_ready_seconds


def is_available(pod: pod_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    at = available_at(pod, min_ready_seconds)
    return at is not None and at <= now


def wait_for_available(pods: list[pod_pb2.Pod], min_ready_seconds: int,
                       now: float) -> float | None:
    """Seconds until the first ready-but-not-yet-available pod becomes
    available (to look again then), or None if none is waiting."""
    waits = [at - now for pod in pods
             if (at := available_at(pod, min_ready_seconds)) is not None and at > now]
    return min(waits) if waits else None
