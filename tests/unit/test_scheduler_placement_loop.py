"""The pod queue, and the Placer loop against an in-memory Cluster."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext

from proto.podium.v1 import cluster_pb2, pod_pb2
from scheduler.objects import Key, key_of, kind_of, meta, wrap
from scheduler.placement import Placer, PodQueue
from scheduler.store.base import (
    AlreadyExists,
    Change,
    Compacted,
    Conflict,
    EventType,
    NotFound,
)
from tests.unit.test_scheduler_placement_plugins import make_node, make_pod


class FakeWatch:
    def __init__(self, cluster: FakeCluster, kind: str, after: int) -> None:
        self.cluster, self.kind, self.after = cluster, kind, after
        self.cursor = 0  # the log is in revision order: no need to rescan it
        self.closed = False
        self.fail: Exception | None = None

    def __iter__(self) -> Iterator[Change]:
        while (change := self.next()) is not None:
            yield change

    def next(self, timeout: float | None = None) -> Change | None:
        if self.fail is not None:
            raise self.fail
        deadline = time.monotonic() + (timeout or 0)
        while not self.closed:
            with self.cluster.lock:
                log = self.cluster.log
                while self.cursor < len(log):
                    change = log[self.cursor]
                    self.cursor += 1
                    if change.revision > self.after and kind_of(change.object) == self.kind:
                        self.after = change.revision
                        return change
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        return None

    def close(self) -> None:
        self.closed = True


class FakeCluster:
    """The Cluster protocol over a dict, with a change log the watches read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[Key, cluster_pb2.Object] = {}
        self.revision = 0
        self.log: list[Change] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.watches: list[FakeWatch] = []
        self.status_writes = 0
        self.conflict_next_bind = False

    def _write(self, obj: cluster_pb2.Object, type: EventType) -> cluster_pb2.Object:
        self.revision += 1
        stored = cluster_pb2.Object()
        stored.CopyFrom(obj)
        meta(stored).resource_version = str(self.revision)
        if type == EventType.DELETED:
            del self.objects[key_of(stored)]
        else:
            self.objects[key_of(stored)] = stored
        self.log.append(Change(type, stored, self.revision))
        return stored

    def get(self, key: Key) -> cluster_pb2.Object:
        if key not in self.objects:
            raise NotFound(str(key))
        return self.objects[key]

    def list(self, kind: str, namespace: str = "") -> tuple[list[cluster_pb2.Object], int]:
        return [o for k, o in sorted(self.objects.items()) if k.kind == kind], self.revision

    def create(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        with self.lock:
            if key_of(obj) in self.objects:
                raise AlreadyExists(str(key_of(obj)))
            return self._write(obj, EventType.ADDED)

    def _check(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        old = self.get(key_of(obj))
        if meta(obj).resource_version != meta(old).resource_version:
            raise Conflict(str(key_of(obj)))
        return old

    def update(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        with self.lock:
            self._check(obj)
            return self._write(obj, EventType.MODIFIED)

    def update_status(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        with self.lock:
            new = cluster_pb2.Object()
            new.CopyFrom(self._check(obj))
            new.pod.status.CopyFrom(obj.pod.status)
            self.status_writes += 1
            return self._write(new, EventType.MODIFIED)

    def bind(self, key: Key, node_name: str, resource_version: str) -> cluster_pb2.Object:
        with self.lock:
            old = self.get(key)
            if self.conflict_next_bind:
                # Someone changed the pod just before the bind.
                self.conflict_next_bind = False
                changed = cluster_pb2.Object()
                changed.CopyFrom(old)
                changed.pod.metadata.labels["touched"] = "yes"
                self._write(changed, EventType.MODIFIED)
                raise Conflict(f"{key} changed")
            if old.pod.metadata.resource_version != resource_version or old.pod.spec.node_name:
                raise Conflict(f"{key} changed")
            new = cluster_pb2.Object()
            new.CopyFrom(old)
            new.pod.spec.node_name = node_name
            return self._write(new, EventType.MODIFIED)

    def delete(self, key: Key, grace_period_seconds: int | None = None,
               force: bool = False) -> cluster_pb2.Object:
        with self.lock:
            return self._write(self.get(key), EventType.DELETED)

    def watch(self, kind: str = "", namespace: str = "", from_revision: int = 0) -> FakeWatch:
        w = FakeWatch(self, kind, from_revision)
        self.watches.append(w)
        return w

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()

    def event(self, about: cluster_pb2.Object, reason: str, message: str,
              type: str = "Normal") -> None:
        self.events.append((meta(about).name, reason, message, type))

    # helpers
    def pod(self, name: str) -> pod_pb2.Pod:
        return self.objects[Key("Pod", "default", name)].pod

    def node_of(self, name: str) -> str:
        return self.pod(name).spec.node_name


def cluster_with(*nodes: str, cpu: str = "4", memory: str = "8Gi") -> FakeCluster:
    c = FakeCluster()
    for n in nodes:
        c.create(wrap(make_node(n, cpu=cpu, memory=memory)))
    return c


# --- queue ---

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_queue_fifo_park_and_retry() -> None:
    clock = Clock()
    q = PodQueue(clock, flush_after=30)
    for name in "abc":
        q.update(make_pod(name))
    q.update(make_pod("bound", node="n1"))
    a = q.pop()
    assert a is not None and a.metadata.name == "a"
    q.park(a)
    assert q.unschedulable() == [Key("Pod", "default", "a")]
    # A status-only change (our own condition) leaves it parked.
    a2 = make_pod("a", rv="2")
    a2.status.message = "x"
    q.update(a2)
    assert q.active == 2
    # A spec change puts it back in line.
    q.update(make_pod("a", cpu="1", rv="3"))
    assert q.active == 3 and not q.unschedulable()
    assert [q.pop().metadata.name for _ in range(3)] == ["b", "c", "a"]  # type: ignore[union-attr]
    assert q.pop() is None


def test_queue_move_all_flush_and_leaving() -> None:
    clock = Clock()
    q = PodQueue(clock, flush_after=30)
    q.park(make_pod("a"))
    clock.now = 10
    q.park(make_pod("b"))
    clock.now = 35
    assert q.flush() == 1 and q.active == 1
    assert q.move_all() == 1 and q.active == 2
    q.update(make_pod("a", node="elsewhere"))  # bound by someone else
    deleting = make_pod("b")
    deleting.metadata.deletion_timestamp.seconds = 1
    q.update(deleting)
    assert len(q) == 0


# --- loop ---

def test_binds_pending_pods_and_records_events() -> None:
    c = cluster_with("n1")
    c.create(wrap(make_pod("web", "100m")))
    c.create(wrap(make_pod("pinned", node="elsewhere")))
    placer = Placer(c)
    assert placer.step() == 1
    assert c.node_of("web") == "n1"
    assert c.node_of("pinned") == "elsewhere"
    assert c.events == [("web", "Scheduled", "Successfully assigned default/web to n1",
                         "Normal")]
    # A pod created later arrives through the watch.
    c.create(wrap(make_pod("late")))
    assert placer.step() == 1 and c.node_of("late") == "n1"


def test_unschedulable_until_a_node_is_added() -> None:
    c = cluster_with("small", cpu="1")
    c.create(wrap(make_pod("big", "2")))
    placer = Placer(c)
    assert placer.step() == 0
    msg = "0/1 nodes are available: 1 Insufficient cpu."
    cond = c.pod("big").status.conditions[0]
    assert (cond.type, cond.status, cond.reason, cond.message) == (
        "PodScheduled", "False", "Unschedulable", msg)
    assert c.events[-1] == ("big", "FailedScheduling", msg, "Warning")
    assert c.status_writes == 1
    # Our own status write comes back through the watch: not retried for it.
    assert placer.step() == 0
    assert placer.queue.unschedulable() == [Key("Pod", "default", "big")]
    # A bound pod finishing retries; same message, so no second status write.
    c.create(wrap(make_pod("other", node="small")))
    placer.step()
    c.delete(Key("Pod", "default", "other"))
    placer.step()
    assert c.status_writes == 1
    assert [e[1] for e in c.events].count("FailedScheduling") == 2
    c.create(wrap(make_node("large", cpu="8")))
    assert placer.step() == 1
    assert c.node_of("big") == "large"


def test_periodic_flush_retries() -> None:
    clock = Clock()
    c = cluster_with("n1", cpu="1")
    c.create(wrap(make_pod("big", "2")))
    placer = Placer(c, clock=clock, flush_after=30)
    placer.step()
    # Room opens without a change the queue reacts to (edited in the snapshot
    # here), so only the periodic flush retries the pod.
    node = placer.snapshot.node("n1")
    assert node is not None
    node.alloc_milli_cpu = 4000
    clock.now = 10
    assert placer.step() == 0
    clock.now = 31
    assert placer.step() == 1


def test_conflict_drops_the_pod_until_the_watch_brings_it_back() -> None:
    c = cluster_with("n1")
    c.create(wrap(make_pod("web")))
    c.conflict_next_bind = True
    placer = Placer(c)
    assert placer.step() == 0
    assert c.node_of("web") == "" and len(placer.queue) == 0
    assert placer.step() == 1
    assert c.node_of("web") == "n1"


def test_deleted_pod_leaves_the_queue() -> None:
    c = cluster_with("n1", cpu="1")
    c.create(wrap(make_pod("big", "2")))
    placer = Placer(c)
    placer.step()
    c.delete(Key("Pod", "default", "big"))
    placer.step()
    assert len(placer.queue) == 0


def test_compacted_watch_relists() -> None:
    c = cluster_with("n1")
    placer = Placer(c)
    placer.step()
    c.create(wrap(make_pod("web")))
    c.watches[-1].fail = Compacted("too old")
    assert placer.step() == 1
    assert c.node_of("web") == "n1"
    assert len(c.watches) == 4 and all(w.closed for w in c.watches[:2])


def test_own_binds_are_assumed_before_the_watch_echoes_them() -> None:
    c = cluster_with("a", "b", cpu="1")
    for i in range(3):
        c.create(wrap(make_pod(f"p{i}", "1")))
    placer = Placer(c)
    assert placer.step() == 2  # one round, no watch read in between
    assert sorted(c.node_of(f"p{i}") for i in range(3)) == ["", "a", "b"]


def test_six_replicas_spread_two_two_two() -> None:
    c = cluster_with("a", "b", "c")
    for i in range(6):
        c.create(wrap(make_pod(f"web-{i}", "100m", "64Mi", owner="web")))
    Placer(c).step()
    assert Counter(c.node_of(f"web-{i}") for i in range(6)) == {"a": 2, "b": 2, "c": 2}


def test_run_until_stopped() -> None:
    c = cluster_with("n1")
    placer = Placer(c, poll_interval=0.01)
    stop = threading.Event()
    t = threading.Thread(target=placer.run, args=(stop,))
    t.start()
    try:
        c.create(wrap(make_pod("web")))
        deadline = time.monotonic() + 10
        while c.node_of("web") == "" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.node_of("web") == "n1"
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert all(w.closed for w in c.watches)


def test_bind_of_a_vanished_pod_is_dropped() -> None:
    c = cluster_with("n1")
    c.create(wrap(make_pod("web")))
    placer = Placer(c)

    def bind(key: Key, node_name: str, resource_version: str) -> cluster_pb2.Object:
        raise NotFound(f"{key} is gone")
    c.bind = bind  # type: ignore[method-assign]
    assert placer.step() == 0 and len(placer.queue) == 0
