"""What a controller's decision asks for, and the one place that does it.

Decision functions return a `Plan`: a list of actions and when to look
again. `apply` performs the actions through the Cluster in order and writes
each result into the controller's cache at once, so the next decision sees
its own writes even before the watch echoes them (what Kubernetes calls
expectations, made unnecessary by a synchronous cluster).
"""

from __future__ import annotations

import dataclasses
import logging

from proto.podium.v1 import cluster_pb2
from scheduler.cluster import Cluster
from scheduler.controllers.informer import Informer
from scheduler.objects import Key, key_of, kind_of, meta
from scheduler.store.base import NotFound

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Create:
    object: cluster_pb2.Object


@dataclasses.dataclass(frozen=True)
class Update:
    """Metadata and spec; the object carries the resource_version it read."""

    object: cluster_pb2.Object


@dataclasses.dataclass(frozen=True)
class UpdateStatus:
    object: cluster_pb2.Object


@dataclasses.dataclass(frozen=True)
class Delete:
    key: Key
    force: bool = False


@dataclasses.dataclass(frozen=True)
class Emit:
    """Records an Event about `about`."""

    about: cluster_pb2.Object
    reason: str
    message: str
    type: str = "Normal"


Action = Create | Update | UpdateStatus | Delete | Emit


@dataclasses.dataclass
class Plan:
    actions: list[Action] = dataclasses.field(default_factory=list)
    # Look at the object again after this many seconds even if nothing
    # changes (a pod about to become available, a deadline); None: only on change.
    requeue_after: float | None = None

    def wait(self, seconds: float | None) -> None:
        """Asks to look again after `seconds`, keeping the earliest wish."""
        if seconds is None:
            return
        seconds = max(seconds, 0.0)
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


def apply(cluster: Cluster, informer: Informer | None, actions: list[Action]) -> None:
    """Performs `actions` in order; the first failure propagates (the caller
    requeues, and the next decision starts from what was done)."""
    for action in actions:
        if isinstance(action, Create):
            stored = cluster.create(action.object)
            if informer is not None:
                informer.record(stored)
        elif isinstance(action, Update):
            stored = cluster.update(action.object)
            if informer is not None:
                informer.record(stored)
        elif isinstance(action, UpdateStatus):
            stored = cluster.update_status(action.object)
            if informer is not None:
                informer.record(stored)
        elif isinstance(action, Delete):
            _delete(cluster, informer, action)
        else:
            try:
                cluster.event(action.about, action.reason, action.message, action.type)
            except Exception as err:  # noqa: BLE001 - an event is never worth a retry
                log.warning("event %s about %s not recorded: %s",
                            action.reason, key_of(action.about), err)


def _delete(cluster: Cluster, informer: Informer | None, action: Delete) -> None:
    try:
        last = cluster.delete(action.key, force=action.force)
    except NotFound:
        if informer is not None:
            informer.forget(action.key, None)
        return
    if informer is None:
        return
    if not action.force and kind_of(last) == "Pod" and meta(last).HasField("deletion_timestamp"):
        # A graceful delete: the pod stays until its agent has stopped it.
        informer.record(last)
    else:
        informer.forget(action.key, last)
