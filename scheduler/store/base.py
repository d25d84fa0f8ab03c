"""The store's interface: what the API and the controllers may rely on.

Shaped after etcd so that an etcd backend can follow the SQLite one: one
revision counter for the whole store, bumped by every write; an object's
`metadata.resource_version` is the revision that last wrote it (as a
decimal string); writes can compare-and-swap on it; watches replay the
changes after a revision, then follow live ones.

The store keeps objects as they are given. Validation, defaulting, uids and
timestamps belong to the API layer (scheduler/api), which is the only
writer besides tests.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from proto.podium.v1 import cluster_pb2
from scheduler.objects import Key


class StoreError(Exception):
    """Base of the store's errors; the message names the object."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The object changed since the resource_version the caller read."""


class Compacted(StoreError):
    """A watch asked for changes older than the store still keeps: list again."""


class TooFarBehind(StoreError):
    """A watcher did not keep up with the changes and was dropped: list again."""


class StoreFileError(StoreError):
    """The store's file cannot be used: not a podium store, written by a newer
    podium, in use by another process, or failing I/O. The message names it."""


class EventType(enum.StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


class Change(NamedTuple):
    type: EventType
    # After the write; for DELETED, the object as last stored.
    object: cluster_pb2.Object
    revision: int


class Watch(Protocol):
    """Changes in revision order. Iterating blocks until the next change or
    close(); it raises TooFarBehind if the watcher's buffer overflowed."""

    def __iter__(self) -> Iterator[Change]: ...

    def next(self, timeout: float | None = None) -> Change | None:
        """The next change, or None after `timeout` seconds (or once closed)."""

    def close(self) -> None:
        """Ends the watch; a blocked iteration returns. Safe from any thread."""


class Store(Protocol):
    """Thread-safe: the gRPC servicers and the controllers share one store."""

    @property
    def revision(self) -> int:
        """The revision of the latest write (0 for an empty store)."""

    def create(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        """Stores a new object; returns it with resource_version set.
        AlreadyExists if its key is taken."""

    def get(self, key: Key) -> cluster_pb2.Object:
        """NotFound if absent."""

    def list(self, kind: str, namespace: str = "") -> tuple[list[cluster_pb2.Object], int]:
        """The kind's objects (of one namespace, or all if ""), sorted by
        namespace then name, and the revision they were read at."""

    def update(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        """Replaces the stored object with the same key. If obj carries a
        resource_version it must equal the stored one (Conflict otherwise);
        an empty one replaces unconditionally. NotFound if absent."""

    def delete(self, key: Key, resource_version: str = "") -> cluster_pb2.Object:
        """Removes the object and returns its last stored state; Conflict if
        resource_version is given and differs. NotFound if absent."""

    def watch(self, kind: str = "", namespace: str = "",
              from_revision: int | None = None, node: str = "",
              kinds: tuple[str, ...] = ()) -> Watch:
        """Changes to objects of `kind` ("" for all) in `namespace` ("" for all)
        with revision > from_revision (0: every change kept, for a list of an
        empty store); None means from now on. Compacted if
        from_revision is older than the history kept.

        `node` (kind "Pod" only): just the pods bound to that node. A pod's
        spec.nodeName never changes once set, so every change of such a pod
        concerns the node and no other pod's does; the store indexes these
        watches by node, and a change wakes only its own node's watcher, however
        many nodes the cluster has.

        `kinds` (with kind "" only): just the changes of these kinds, in the one
        order of the store, as a controller's informer keeps a few kinds. The
        store skips the others before they wake the watcher (an informer that
        dropped every Event itself was woken for each, four a pod start)."""

    def batch(self) -> AbstractContextManager[None]:
        """Writes inside the block share one transaction (one fsync) and are
        durable and seen by watchers when it ends; an exception leaving it
        undoes them all."""

    def close(self) -> None: ...
