"""Placement: which node runs a pod.

`Framework.decide(pod, snapshot) -> Decision` is pure: filter plugins reject
nodes with a reason (kept as data: the answer to "why is my pod Pending?"),
score plugins rank a sample of the rest. `Placer(cluster)` is the loop that
keeps the `Snapshot` and the queue current from watches and binds.

Plugins are registered by name (`register_filter`, `register_scorer`);
`Framework(filters=..., scorers=[(name, weight), ...])` picks them.
"""

from scheduler.placement.framework import (
    DEFAULT_FILTERS,
    DEFAULT_SCORERS,
    Decision,
    Framework,
    decide,
    unschedulable_message,
)
from scheduler.placement.loop import Placer
from scheduler.placement.queue import PodQueue, is_pending
from scheduler.placement.registry import (
    FILTERS,
    SCORERS,
    NodeCheck,
    NodeScore,
    PlacementError,
    Scorer,
    register_filter,
    register_scorer,
)
from scheduler.placement.snapshot import NodeInfo, PodInfo, Snapshot, pod_requests

__all__ = [
    "DEFAULT_FILTERS", "DEFAULT_SCORERS", "FILTERS", "SCORERS", "Decision", "Framework",
    "NodeCheck", "NodeInfo", "NodeScore", "PlacementError", "Placer", "PodInfo", "PodQueue",
    "Scorer", "Snapshot", "decide", "is_pending", "pod_requests", "register_filter",
    "register_scorer", "unschedulable_message",
]
