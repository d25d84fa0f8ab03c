"""Watch streams as clients see them: list-then-watch, filters, bookmarks, relist.

A watcher filtered by a selector must hear when an object leaves its view,
not only when it is deleted: an object that stops matching comes as DELETED
and one that starts matching as ADDED, as Kubernetes' watch cache does. So
each stream remembers which keys it has shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from proto.podium.v1 import cluster_pb2
from scheduler import objects
from scheduler.cluster import Cluster
from scheduler.objects import Key
from scheduler.store.base import Compacted, EventType, TooFarBehind

Predicate = Callable[[cluster_pb2.Object], bool]
WatchEvent = cluster_pb2.WatchEvent
_TYPES = {EventType.ADDED: WatchEvent.ADDED, EventType.MODIFIED: WatchEvent.MODIFIED,
          EventType.DELETED: WatchEvent.DELETED}


def stream(cluster: Cluster, kind: str, namespace: str, matches: Predicate,
           from_revision: int, context: grpc.ServicerContext,
           bookmark_every: float | None = None, node: str = "") -> Iterator[WatchEvent]:
    """WatchEvents for objects of `kind` that match, until `active()` is false.
    `node`: the store's own filter for pods bound to that node (store.base.Store.watch),
    which `matches` must agree with.

    from_revision 0: every current match as ADDED, a BOOKMARK, then changes.
    A store that no longer has the history asked for, or a watcher that fell
    behind, ends the stream with an ERROR event saying to relist.
    """
    # Which objects this watcher has been shown; unknown when it resumes from
    # a revision (the client listed earlier), then changes pass as they are.
    shown: set[Key] | None = None
    try:
        if from_revision == 0:
            shown = set()
            items, from_revision = cluster.list(kind, namespace)
            for item in items:
                if matches(item):
                    shown.add(objects.key_of(item))
                    yield WatchEvent(type=WatchEvent.ADDED, object=item,
                                     revision=from_revision)
            yield WatchEvent(type=WatchEvent.BOOKMARK, revision=from_revision)
        watch = cluster.watch(kind, namespace, from_revision, node)
        # A client that leaves while the stream is parked at a `yield` never
        # resumes this generator: the watch must end with the call.
        context.add_callback(watch.close)
    except Compacted as error:
        yield _relist(str(error))
        return
    last = from_revision
    try:
        while context.is_active():
            try:
                change = watch.next(timeout=bookmark_every or 1.0)
            except TooFarBehind as error:
                yield _relist(str(error))
                return
            if change is None:
                if bookmark_every:
                    yield WatchEvent(type=WatchEvent.BOOKMARK, revision=last)
                continue
            last = change.revision
            event = _view(change.type, change.object, change.revision, matches, shown)
            if event is not None:
                yield event
    finally:
        watch.close()


def _view(type: EventType, obj: cluster_pb2.Object, revision: int, matches: Predicate,
          shown: set[Key] | None) -> WatchEvent | None:
    """The change as this watcher sees it, or None if it never saw the object."""
    if shown is None:
        if not matches(obj):
            return None  # whether it matched before is not known here
        return WatchEvent(type=_TYPES[type], object=obj, revision=revision)
    key = objects.key_of(obj)
    was = key in shown
    now = type is not EventType.DELETED and matches(obj)
    if now:
        shown.add(key)
        kind = WatchEvent.MODIFIED if was else WatchEvent.ADDED
        return WatchEvent(type=kind, object=obj, revision=revision)
    if was:
        shown.discard(key)
        return WatchEvent(type=WatchEvent.DELETED, object=obj, revision=revision)
    return None


def _relist(message: str) -> WatchEvent:
    return WatchEvent(type=WatchEvent.ERROR, message=message, relist=True)
