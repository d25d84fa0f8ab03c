"""An in-memory Cluster for the controllers' tests, and the tests of the
pieces every controller shares: the work queue and the informer (list,
watch, relist on Compacted / TooFarBehind, own writes).

FakeCluster keeps objects in a dict with one revision counter, replays
history to watches and can drop a watcher (TooFarBehind) or forget history
(Compacted) on demand. Pods are deleted at once unless `graceful_pods` is
set, in which case bound pods get a deletion_timestamp until
`finish_deletions()`.
"""

from __future__ import annotations

import random
import string
import uuid
from collections import deque

import pytest

from proto.podium.v1 import cluster_pb2, core_pb2, meta_pb2, pod_pb2
from scheduler.controllers.base import WorkQueue
from scheduler.controllers.informer import Informer
from scheduler.controllers.pods import timestamp
from scheduler.objects import Key, check_kind, key_of, kind_of, meta, scope, wrap
from scheduler.store.base import (
    AlreadyExists,
    Change,
    Compacted,
    Conflict,
    EventType,
    NotFound,
    TooFarBehind,
)


class FakeWatch:
    def __init__(self, cluster: FakeCluster, kind: str, namespace: str,
                 kinds: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.kind = kind
        self.kinds = kinds
        self.namespace = namespace
        self.queue: deque[Change] = deque()
        self.dropped: type[Exception] | None = None
        self.closed = False

    def wants(self, change: Change) -> bool:
        key = key_of(change.object)
        return ((not self.kind or key.kind == self.kind)
                and (not self.kinds or key.kind in self.kinds)
                and (not self.namespace or key.namespace == self.namespace))

    def next(self, timeout: float | None = None) -> Change | None:
        if self.dropped is not None:
            raise self.dropped("fake watcher dropped")
        if self.closed or not self.queue:
            return None
        return self.queue.popleft()

    def __iter__(self):  # type: ignore[no-untyped-def]
        while (change := self.next()) is not None:
            yield change

    def close(self) -> None:
        self.closed = True
        if self in self.cluster.watches:
            self.cluster.watches.remove(self)


class FakeCluster:
    def __init__(self, graceful_pods: bool = False) -> None:
        self.objects: dict[Key, cluster_pb2.Object] = {}
        self.revision = 0
        self.history: list[Change] = []
        self.compacted = 0
        self.watches: list[FakeWatch] = []
        self.events: list[tuple[Key, str, str, str]] = []
        self.graceful_pods = graceful_pods
        self.now = 1_700_000_000.0
        self.rng = random.Random(0)
        self.writes = 0

    # --- helpers for tests ---

    def _record(self, type: EventType, obj: cluster_pb2.Object) -> None:
        change = Change(type, obj, self.revision)
        self.history.append(change)
        for w in list(self.watches):
            if w.wants(change):
                w.queue.append(change)

    def _bump(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        self.revision += 1
        self.writes += 1
        out = cluster_pb2.Object()
        out.CopyFrom(obj)
        meta(out).resource_version = str(self.revision)
        return out

    def drop_watches(self, error: type[Exception] = TooFarBehind) -> None:
        for w in self.watches:
            w.dropped = error

    def compact(self) -> None:
        self.compacted = self.revision
        self.history.clear()

    def of(self, kind: str) -> list[cluster_pb2.Object]:
        return [o for k, o in sorted(self.objects.items()) if k.kind == kind]

    def reasons(self) -> list[str]:
        return [e[1] for e in self.events]

    def finish_deletions(self) -> None:
        for key, obj in list(self.objects.items()):
            if meta(obj).HasField("deletion_timestamp"):
                self.delete(key, force=True)

    # --- the Cluster protocol ---

    def get(self, key: Key) -> cluster_pb2.Object:
        if key not in self.objects:
            raise NotFound(f"{key} not found")
        out = cluster_pb2.Object()
        out.CopyFrom(self.objects[key])
        return out

    def list(self, kind: str, namespace: str = "") -> tuple[list[cluster_pb2.Object], int]:
        return ([o for k, o in sorted(self.objects.items())
                 if k.kind == kind and (not namespace or k.namespace == namespace)],
                self.revision)

    def create(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        kind = check_kind(kind_of(obj))
        m = meta(obj)
        if m.resource_version:
            raise ValueError("create with a resource_version")
        new = cluster_pb2.Object()
        new.CopyFrom(obj)
        nm = meta(new)
        nm.namespace = scope(kind, nm.namespace)
        if not nm.name:
            suffix = "".join(self.rng.choice(string.ascii_lowercase + string.digits)
                             for _ in range(5))
            nm.name = nm.generate_name + suffix
        if key_of(new) in self.objects:
            raise AlreadyExists(f"{key_of(new)} exists")
        nm.uid = str(uuid.uuid4())
        nm.generation = 1
        nm.creation_timestamp.CopyFrom(timestamp(self.now))
        new = self._bump(new)
        self.objects[key_of(new)] = new
        self._record(EventType.ADDED, new)
        return self.get(key_of(new))

    def _stored_for(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        key = key_of(obj)
        if key not in self.objects:
            raise NotFound(f"{key} not found")
        stored = self.objects[key]
        rv = meta(obj).resource_version
        if rv and rv != meta(stored).resource_version:
            raise Conflict(f"{key}: resource_version {rv} is stale")
        return stored

    def update(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        stored = self._stored_for(obj)
        kind = kind_of(obj)
        new = cluster_pb2.Object()
        new.CopyFrom(obj)
        inner_new = getattr(new, _field(kind))
        inner_old = getattr(stored, _field(kind))
        if hasattr(inner_new, "status"):
            inner_new.status.CopyFrom(inner_old.status)
        for name in ("uid", "creation_timestamp", "generation", "deletion_timestamp"):
            field = getattr(meta(stored), name)
            if name in ("creation_timestamp", "deletion_timestamp"):
                meta(new).ClearField(name)
                if meta(stored).HasField(name):
                    getattr(meta(new), name).CopyFrom(field)
            else:
                setattr(meta(new), name, field)
        if hasattr(inner_new, "spec") and inner_new.spec != inner_old.spec:
            meta(new).generation += 1
        new = self._bump(new)
        self.objects[key_of(new)] = new
        self._record(EventType.MODIFIED, new)
        return self.get(key_of(new))

    def update_status(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        stored = self._stored_for(obj)
        kind = kind_of(obj)
        new = cluster_pb2.Object()
        new.CopyFrom(stored)
        getattr(new, _field(kind)).status.CopyFrom(getattr(obj, _field(kind)).status)
        new = self._bump(new)
        self.objects[key_of(new)] = new
        self._record(EventType.MODIFIED, new)
        return self.get(key_of(new))

    def bind(self, key: Key, node_name: str, resource_version: str) -> cluster_pb2.Object:
        obj = self.get(key)
        if obj.pod.spec.node_name:
            raise Conflict(f"{key} already bound")
        obj.pod.spec.node_name = node_name
        meta(obj).resource_version = resource_version
        return self.update(obj)

    def delete(self, key: Key, grace_period_seconds: int | None = None,
               force: bool = False) -> cluster_pb2.Object:
        obj = self.get(key)
        if (self.graceful_pods and not force and key.kind == "Pod" and obj.pod.spec.node_name
                and not obj.pod.metadata.HasField("deletion_timestamp")):
            obj.pod.metadata.deletion_timestamp.CopyFrom(timestamp(self.now))
            obj = self._bump(obj)
            self.objects[key] = obj
            self._record(EventType.MODIFIED, obj)
            return self.get(key)
        del self.objects[key]
        self.revision += 1
        self.writes += 1
        self._record(EventType.DELETED, obj)
        return obj

    def watch(self, kind: str = "", namespace: str = "", from_revision: int = 0,
              node: str = "", kinds: tuple[str, ...] = ()) -> FakeWatch:
        if from_revision and from_revision < self.compacted:
            raise Compacted(f"revision {from_revision} is compacted (oldest {self.compacted})")
        w = FakeWatch(self, kind, namespace, kinds)
        if from_revision:
            w.queue.extend(c for c in self.history if c.revision > from_revision and w.wants(c))
        self.watches.append(w)
        return w

    def event(self, about: cluster_pb2.Object, reason: str, message: str,
              type: str = "Normal") -> None:
        # Stored like the real cluster does, so watchers see Events go by.
        ev = core_pb2.Event(reason=reason, message=message, type=type)
        ev.metadata.namespace = meta(about).namespace or "default"
        ev.metadata.generate_name = meta(about).name + "."
        ev.involved_object.CopyFrom(meta_pb2.ObjectReference(
            kind=kind_of(about), name=meta(about).name, uid=meta(about).uid))
        self.create(wrap(ev))
        self.events.append((key_of(about), reason, message, type))


def _field(kind: str) -> str:
    from scheduler.objects import KINDS
    return KINDS[kind]


def make_pod(name: str, labels: dict[str, str] | None = None, node: str = "",
             restart: str = "Always") -> cluster_pb2.Object:
    pod = pod_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.namespace = "default"
    pod.metadata.labels.update(labels or {})
    pod.spec.containers.add(name="c", image="busybox")
    pod.spec.restart_policy = restart
    pod.spec.node_name = node
    return wrap(pod)


# --- tests of the shared pieces ---


def test_work_queue_dedupes_and_waits() -> None:
    now = [0.0]
    q = WorkQueue(lambda: now[0])
    a, b = Key("Pod", "default", "a"), Key("Pod", "default", "b")
    q.add(a, 5.0)
    q.add(a, 1.0)
    q.add(b)
    assert q.pop_due() == [b]
    assert q.next_in() == 1.0
    now[0] = 1.0
    assert q.pop_due() == [a]
    assert len(q) == 0 and q.next_in() is None


def test_informer_lists_then_follows_the_watch() -> None:
    c = FakeCluster()
    c.create(make_pod("a"))
    inf = Informer(c, ("Pod",))
    notices = inf.sync()
    assert [n.type for n in notices] == [EventType.ADDED]
    c.create(make_pod("b"))
    c.delete(Key("Pod", "default", "a"))
    notices = inf.sync()
    assert [(n.type, meta(n.object).name) for n in notices] == [
        (EventType.ADDED, "b"), (EventType.DELETED, "a")]
    assert [meta(o).name for o in inf.objects("Pod")] == ["b"]
    assert inf.relists == 1


@pytest.mark.parametrize("error", [TooFarBehind, Compacted])
def test_informer_lists_again_when_the_watch_is_lost(error: type[Exception]) -> None:
    c = FakeCluster()
    c.create(make_pod("a"))
    inf = Informer(c, ("Pod",))
    inf.sync()
    for w in c.watches:
        w.closed = True  # deaf: the changes below never reach it
    c.create(make_pod("b"))
    c.delete(Key("Pod", "default", "a"))
    c.compact()
    c.drop_watches(error)
    notices = inf.sync()
    assert inf.relists == 2
    assert sorted((n.type, meta(n.object).name) for n in notices) == [
        (EventType.ADDED, "b"), (EventType.DELETED, "a")]


def test_informer_ignores_stale_echoes_of_own_writes() -> None:
    c = FakeCluster()
    inf = Informer(c, ("Pod",))
    inf.sync()
    created = c.create(make_pod("a"))
    inf.record(created)
    modified = c.get(key_of(created))
    modified.pod.metadata.labels["x"] = "1"
    modified = c.update(modified)
    inf.record(modified)
    last = c.delete(key_of(created))
    inf.forget(key_of(created), last)
    assert inf.sync() == []  # the echoes of ADDED/MODIFIED/DELETED change nothing
    assert inf.objects("Pod") == []


def test_informer_keeps_a_pod_created_again_under_the_same_name() -> None:
    c = FakeCluster()
    inf = Informer(c, ("Pod",))
    inf.sync()
    old = c.create(make_pod("a"))
    inf.sync()
    last = c.delete(key_of(old), force=True)
    inf.forget(key_of(old), last)
    again = c.create(make_pod("a"))
    inf.record(again)
    inf.sync()
    got = inf.get(key_of(again))
    assert got is not None and meta(got).uid == meta(again).uid


def test_informer_indexes_follow_every_change() -> None:
    c = FakeCluster()
    owner = c.create(make_pod("owner"))
    owner_uid = meta(owner).uid
    dependent = make_pod("dep")
    meta(dependent).owner_references.add(kind="Pod", name="owner", uid=owner_uid)
    dependent = c.create(dependent)
    inf = Informer(c, ("Pod", "Node"))
    inf.sync()  # listed
    dep_key = key_of(dependent)
    assert inf.dependents(owner_uid) == [dep_key]
    assert inf.has_uid(owner_uid) and inf.has_uid(meta(dependent).uid)
    assert inf.objects("Node") == [] and len(inf.objects("Pod", "default")) == 2
    # Watched: the reference dropped, then the owner deleted.
    changed = c.get(dep_key)
    del meta(changed).owner_references[:]
    c.update(changed)
    inf.sync()
    assert inf.dependents(owner_uid) == []
    c.delete(key_of(owner))
    inf.sync()
    assert not inf.has_uid(owner_uid)
    # Own writes: recorded with a reference again, then forgotten.
    again = c.get(dep_key)
    meta(again).owner_references.add(kind="Pod", name="owner", uid=owner_uid)
    inf.record(c.update(again))
    assert inf.dependents(owner_uid) == [dep_key]
    inf.forget(dep_key, c.delete(dep_key))
    assert inf.dependents(owner_uid) == [] and inf.objects("Pod") == []
    assert not inf.has_uid(meta(dependent).uid)
