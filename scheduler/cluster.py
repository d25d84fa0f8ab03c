"""What the scheduler's own loops (placement, controllers) may do to the cluster.

The gRPC servicers and these loops go through the same object registry
(scheduler/api/registry.py), so a controller's write is validated, defaulted
and versioned exactly like a user's. The loops see only this Protocol, which
lets their tests use an in-memory fake.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from proto.podium.v1 import cluster_pb2
from scheduler.objects import Key
from scheduler.store.base import Watch


class Cluster(Protocol):
    def get(self, key: Key) -> cluster_pb2.Object:
        """store.base.NotFound if absent."""

    def list(self, kind: str, namespace: str = "") -> tuple[list[cluster_pb2.Object], int]:
        """The kind's objects (all namespaces if "") and the revision read at."""

    def create(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        """Validates and defaults, sets uid, creation_timestamp, generation 1
        and a name from metadata.generate_name if name is empty; stores."""

    def update(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        """Replaces metadata (labels, annotations, owner references) and spec,
        keeping the stored status; bumps generation when spec changed.
        Compare-and-swap on metadata.resource_version (store.base.Conflict)."""

    def update_status(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        """Replaces only the status; compare-and-swap as update()."""

    def bind(self, key: Key, node_name: str, resource_version: str) -> cluster_pb2.Object:
        """Sets a pending pod's spec.node_name (and its PodScheduled
        condition); Conflict if the pod changed or is already bound."""

    def delete(self, key: Key, grace_period_seconds: int | None = None,
               force: bool = False) -> cluster_pb2.Object:
        """Pods bound to a node are deleted gracefully (deletion_timestamp
        set; removed once their agent reports them stopped, or at once with
        force); everything else at once."""

    def watch(self, kind: str = "", namespace: str = "",
              from_revision: int | None = None, node: str = "",
              kinds: tuple[str, ...] = ()) -> Watch:
        """As store.base.Store.watch."""

    def batch(self) -> AbstractContextManager[None]:
        """As store.base.Store.batch: the block's writes share one commit."""

    def event(self, about: cluster_pb2.Object, reason: str, message: str,
              type: str = "Normal") -> None:
        """Records an Event about an object (repeats of the same reason and
        message for the same object bump its count)."""
