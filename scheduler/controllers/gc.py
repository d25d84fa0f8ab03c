"""Garbage collection: objects whose owners are gone go too.

An owner reference names an object by kind, name and uid; an object of that
name with another uid is a different object, so the owner counts as gone.
When every owner of an object is gone the object is deleted (background
propagation: a deleted Deployment's ReplicaSets, then their pods); when only
some are, the dangling references are removed. Before acting, the owners are
read from the cluster, not the cache, so a cache that has not yet seen a new
owner never costs a dependent its life.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from proto.podium.v1 import cluster_pb2, meta_pb2
from scheduler.controllers.actions import Action, Delete, Update, apply
from scheduler.controllers.base import Controller
from scheduler.controllers.informer import Notice
from scheduler.objects import KINDS, Key, key_of, meta, scope
from scheduler.store.base import EventType, NotFound

# Events point at objects through involved_object, never owner references.
WATCHED = tuple(kind for kind in KINDS if kind != "Event")

Present = Callable[[meta_pb2.OwnerReference, str], bool]


def decide(obj: cluster_pb2.Object, present: Present) -> Action | None:
    """Delete `obj` if all its owners are gone, drop the references to the
    gone ones if only some are; None if nothing is to be done."""
    m = meta(obj)
    if not m.owner_references or m.HasField("deletion_timestamp"):
        return None
    ns = key_of(obj).namespace
    gone = [r for r in m.owner_references if not present(r, ns)]
    if not gone:
        return None
    if len(gone) == len(m.owner_references):
        return Delete(key_of(obj))
    out = cluster_pb2.Object()
    out.CopyFrom(obj)
    kept = [r for r in m.owner_references if r not in gone]
    del meta(out).owner_references[:]
    meta(out).owner_references.extend(kept)
    return Update(out)


def plan_gc(objects: Sequence[cluster_pb2.Object]) -> list[Action]:
    """Garbage among `objects` (every object that could be an owner)."""
    uids = {meta(o).uid for o in objects}

    def present(ref: meta_pb2.OwnerReference, _: str) -> bool:
        return ref.kind not in KINDS or ref.uid in uids

    return [a for o in objects if (a := decide(o, present)) is not None]


class GarbageCollector(Controller):
    name = "gc"
    kinds = WATCHED

    def keys_for(self, notice: Notice) -> Iterable[Key]:
        obj = notice.object
        keys = [key_of(obj)] if meta(obj).owner_references else []
        if notice.type == EventType.DELETED:
            keys.extend(self._dependents(meta(obj).uid))
        return keys

    def _dependents(self, uid: str) -> list[Key]:
        return self.informer.dependents(uid)

    def resync_keys(self) -> Iterable[Key]:
        return [key_of(o) for o in self.informer.all() if meta(o).owner_references]

    def reconcile(self, key: Key) -> float | None:
        obj = self.informer.get(key)
        if obj is None:
            return None
        cached = decide(obj, lambda ref, _: ref.kind not in KINDS
                        or self.informer.has_uid(ref.uid))
        if cached is None:
            return None
        # The cache says an owner is gone: make sure with the cluster itself.
        action = decide(obj, self._present)
        if action is None:
            return 0.5  # the cache is behind; look again once it has caught up
        apply(self.cluster, self.informer, [action])
        if isinstance(action, Delete):
            # Our own delete never comes back as a notice: its dependents next.
            for dependent in self._dependents(meta(obj).uid):
                self.queue.add(dependent)
        return None

    def _present(self, ref: meta_pb2.OwnerReference, namespace: str) -> bool:
        if ref.kind not in KINDS:
            return True
        try:
            owner = self.cluster.get(Key(ref.kind, scope(ref.kind, namespace), ref.name))
        except NotFound:
            return False
        return meta(owner).uid == ref.uid
