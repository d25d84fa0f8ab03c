"""A local copy of some kinds of objects, kept current from one watch.

`sync()` lists the kinds the first time (and again whenever the watch says
Compacted or TooFarBehind), then drains the watch; it returns what changed
as `Notice`s for the controller to turn into work. One watch over all kinds
keeps the changes of different kinds in the store's order, so a pod is never
seen before the ReplicaSet that created it.

Own writes are recorded at once (`record`, `forget`); a change older than
what the cache holds (its echo, or anything before it) is ignored by
comparing revisions.

The cache is indexed by kind, by uid and by owner uid, so that `objects`,
`has_uid` and `dependents` cost what they return, not a walk over every
object: controllers ask them for each change, and a walk per change made a
burst of N changes cost N². Every change of the cache goes through `_put`
and `_drop`, which keep the indexes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable

from proto.podium.v1 import cluster_pb2
from scheduler.cluster import Cluster
from scheduler.objects import Key, key_of, meta, scope
from scheduler.store.base import Compacted, EventType, TooFarBehind, Watch

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Notice:
    type: EventType
    # The object now; for DELETED, as last stored.
    object: cluster_pb2.Object
    # The cached object before the change, if there was one.
    old: cluster_pb2.Object | None


def _rv(obj: cluster_pb2.Object) -> int:
    value = meta(obj).resource_version
    return int(value) if value.isdigit() else 0


class Informer:
    def __init__(self, cluster: Cluster, kinds: Iterable[str]) -> None:
        self._cluster = cluster
        self.kinds = tuple(kinds)
        self._objects: dict[Key, cluster_pb2.Object] = {}
        self._by_kind: dict[str, dict[Key, cluster_pb2.Object]] = {}
        self._by_uid: dict[str, Key] = {}
        self._by_owner: dict[str, set[Key]] = {}  # an owner's uid → its dependents
        # Keys we deleted: changes at or below the revision are stale echoes.
        self._gone: dict[Key, int] = {}
        self._watch: Watch | None = None
        self.relists = 0

    # --- reading ---

    def get(self, key: Key) -> cluster_pb2.Object | None:
        return self._objects.get(key)

    def objects(self, kind: str, namespace: str = "") -> list[cluster_pb2.Object]:
        of_kind = self._by_kind.get(kind, {})
        if not namespace:
            return list(of_kind.values())
        ns = scope(kind, namespace)
        return [obj for key, obj in of_kind.items() if key.namespace == ns]

    def all(self) -> list[cluster_pb2.Object]:
        return list(self._objects.values())

    def has_uid(self, uid: str) -> bool:
        """Whether an object with this uid is cached."""
        return uid in self._by_uid

    def dependents(self, uid: str) -> list[Key]:
        """The cached objects with an owner reference to this uid."""
        return sorted(self._by_owner.get(uid, ()))

    # --- keeping current ---

    def sync(self, timeout: float = 0.0, settle: float = 0.0) -> list[Notice]:
        """Lists if needed, else waits up to `timeout` for the first change,
        lets more arrive for `settle` seconds, and drains them all; returns
        what changed."""
        if self._watch is None:
            return self._relist()
        notices: list[Notice] = []
        try:
            change = self._watch.next(timeout)
            if change is not None and settle > 0:
                time.sleep(settle)
            while change is not None:  # of our kinds only: the watch names them
                notice = self._apply(change.type, change.object, change.revision)
                if notice is not None:
                    notices.append(notice)
                change = self._watch.next(0)
        except (Compacted, TooFarBehind) as err:
            log.info("watch of %s lost (%s): listing again", ",".join(self.kinds), err)
            self._close_watch()
            notices.extend(self._relist())
        return notices

    def _relist(self) -> list[Notice]:
        self.relists += 1
        fresh: dict[Key, cluster_pb2.Object] = {}
        revision = -1
        for kind in self.kinds:
            items, rev = self._cluster.list(kind)
            # Watch from the oldest list: replaying changes some lists already
            # hold is harmless (revisions say which are stale).
            revision = rev if revision < 0 else min(revision, rev)
            for obj in items:
                fresh[key_of(obj)] = obj
        try:
            self._watch = self._cluster.watch("", "", max(revision, 0), kinds=self.kinds)
        except Compacted:
            # The history moved on between list and watch: list again next time.
            self._watch = None
        notices = [Notice(EventType.DELETED, obj, obj)
                   for key, obj in self._objects.items() if key not in fresh]
        for key, obj in fresh.items():
            old = self._objects.get(key)
            if old is None:
                notices.append(Notice(EventType.ADDED, obj, None))
            elif old != obj:
                notices.append(Notice(EventType.MODIFIED, obj, old))
        self._objects, self._by_kind, self._by_uid, self._by_owner = {}, {}, {}, {}
        for key, obj in fresh.items():
            self._put(key, obj)
        self._gone.clear()
        return notices

    def _apply(self, type: EventType, obj: cluster_pb2.Object, revision: int) -> Notice | None:
        key = key_of(obj)
        old = self._objects.get(key)
        if type == EventType.DELETED:
            self._gone.pop(key, None)
            if old is None or _rv(old) > revision:
                return None
            self._drop(key)
            return Notice(type, obj, old)
        if old is not None and _rv(old) >= revision:
            return None
        if old is None and self._gone.get(key, -1) >= revision:
            return None
        self._put(key, obj)
        return Notice(EventType.ADDED if old is None else EventType.MODIFIED, obj, old)

    def record(self, obj: cluster_pb2.Object) -> None:
        """Our own write, known before the watch says so."""
        key = key_of(obj)
        old = self._objects.get(key)
        if old is None or _rv(old) <= _rv(obj):
            self._put(key, obj)
            self._gone.pop(key, None)

    def forget(self, key: Key, last: cluster_pb2.Object | None) -> None:
        """Our own delete; `last` is the object as last stored, if known."""
        old = self._drop(key)
        stale = max(_rv(last) if last is not None else 0, _rv(old) if old is not None else 0)
        self._gone[key] = stale

    # --- the cache and its indexes: every change goes through these two ---

    def _put(self, key: Key, obj: cluster_pb2.Object) -> None:
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj  # a key already there keeps its place
        self._by_kind.setdefault(key.kind, {})[key] = obj
        m = meta(obj)
        if m.uid:
            self._by_uid[m.uid] = key
        for ref in m.owner_references:
            self._by_owner.setdefault(ref.uid, set()).add(key)

    def _drop(self, key: Key) -> cluster_pb2.Object | None:
        old = self._objects.pop(key, None)
        if old is None:
            return None
        of_kind = self._by_kind[key.kind]
        del of_kind[key]
        if not of_kind:
            del self._by_kind[key.kind]
        self._unindex(key, old)
        return old

    def _unindex(self, key: Key, old: cluster_pb2.Object) -> None:
        """Takes ``old`` out of the uid and owner indexes."""
        m = meta(old)
        if self._by_uid.get(m.uid) == key:
            del self._by_uid[m.uid]
        for ref in m.owner_references:
            dependents = self._by_owner.get(ref.uid)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._by_owner[ref.uid]

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def close(self) -> None:
        self._close_watch()
