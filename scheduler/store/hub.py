"""Live fan-out of the store's changes to its watchers.

The store publishes each change once, after it is durable, while it still
holds its write lock (so changes reach every watcher in revision order). The
hub hands it to the watchers whose filter matches; publishing only appends
to bounded buffers, so a slow watcher never holds a writer up. Watchers of one
node's pods are indexed by node: a pod's change reaches only its own node's
watcher, not a watcher per node that would wake to throw it away. A watcher
whose buffer is full is dropped: it raises TooFarBehind and its owner lists
again.

A change's object is shared by every watcher that receives it; each watcher
copies it as its consumer takes it, so the copy is paid by the reader's
thread, not the writer's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

from proto.podium.v1 import cluster_pb2
from scheduler.objects import Key
from scheduler.store.base import Change, EventType, TooFarBehind

# A change kept in history, parsed only when a watcher takes it.
Recorded = tuple[int, EventType, bytes]
Replay = list[Recorded]


class Watcher:
    """One watch: replayed history first, then live changes (base.Watch)."""

    def __init__(self, hub: Hub, kind: str, namespace: str, after: int,
                 capacity: int, replay: Replay, node: str = "",
                 kinds: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.namespace = namespace
        self.node = node  # only pods bound to this node (the hub indexes by it)
        self.kinds = frozenset(kinds)  # with kind "": only these kinds, if any
        self._hub = hub
        # Live changes at or below this revision were replayed (or predate
        # the watch); skipping them keeps replay and live free of duplicates.
        self._after = after
        self._capacity = capacity
        self._replay: deque[Recorded] = deque(replay)
        self._live: deque[Change] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._overflowed = False

    def matches(self, key: Key) -> bool:
        return ((not self.kind or key.kind == self.kind)
                and (not self.kinds or key.kind in self.kinds)
                and (not self.namespace or key.namespace == self.namespace))

    def offer(self, change: Change) -> bool:
        """Queues a change; False if the buffer was full and the watcher
        is now dropped. Never blocks beyond the watcher's own short lock."""
        with self._cond:
            if self._closed or change.revision <= self._after:
                return True
            if len(self._live) >= self._capacity:
                self._overflowed = True
                self._live.clear()
                self._replay.clear()
                self._cond.notify_all()
                return False
            self._live.append(change)
            self._cond.notify()
            return True

    def next(self, timeout: float | None = None) -> Change | None:
        with self._cond:
            if not self._cond.wait_for(self._ready, timeout):
                return None
            if self._closed:
                return None
            if self._overflowed:
                raise TooFarBehind(
                    f"watch of {self._describe()} fell more than {self._capacity} "
                    "changes behind and was dropped: list again")
            if self._replay:
                recorded: Recorded | None = self._replay.popleft()
                live = None
            elif self._live:
                recorded = None
                live = self._live.popleft()
            else:
                return None
        if recorded is not None:
            revision, type_, data = recorded
            return Change(type_, cluster_pb2.Object.FromString(data), revision)
        assert live is not None
        copy = cluster_pb2.Object()
        copy.CopyFrom(live.object)
        return Change(live.type, copy, live.revision)

    def __iter__(self) -> Iterator[Change]:
        while True:
            change = self.next()
            if change is None:
                return
            yield change

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._replay.clear()
            self._live.clear()
            self._cond.notify_all()
        self._hub.remove(self)

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def _ready(self) -> bool:
        return self._closed or self._overflowed or bool(self._replay) or bool(self._live)

    def _describe(self) -> str:
        what = self.kind or ", ".join(sorted(self.kinds)) or "all kinds"
        if self.node:
            what += f" on node {self.node}"
        return f"{what} in {self.namespace}" if self.namespace else what


def node_of(obj: cluster_pb2.Object) -> str:
    """The node a pod is bound to ("" if none, or not a pod)."""
    return obj.pod.spec.node_name if obj.WhichOneof("kind") == "pod" else ""


class Hub:
    """The set of live watchers, indexed by kind ("" for all kinds), and those of
    one node's pods by node."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"watch buffer must hold at least one change, not {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._by_kind: dict[str, set[Watcher]] = {}
        self._by_node: dict[str, set[Watcher]] = {}  # watchers of one node's pods

    def add(self, kind: str, namespace: str, after: int,
            replay: Replay, node: str = "", kinds: tuple[str, ...] = ()) -> Watcher:
        watcher = Watcher(self, kind, namespace, after, self.capacity, replay, node, kinds)
        with self._lock:
            self._index(watcher).setdefault(node or kind, set()).add(watcher)
        return watcher

    def remove(self, watcher: Watcher) -> None:
        with self._lock:
            index = self._index(watcher)
            name = watcher.node or watcher.kind
            group = index.get(name)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del index[name]

    def _index(self, watcher: Watcher) -> dict[str, set[Watcher]]:
        return self._by_node if watcher.node else self._by_kind

    def publish(self, change: Change, key: Key) -> None:
        node = node_of(change.object) if key.kind == "Pod" else ""
        with self._lock:
            targets = [*self._by_kind.get(key.kind, ()), *self._by_kind.get("", ()),
                       *(self._by_node.get(node, ()) if node else ())]
        for watcher in targets:
            if watcher.matches(key) and not watcher.offer(change):
                self.remove(watcher)

    def count(self) -> int:
        with self._lock:
            return sum(len(group) for index in (self._by_kind, self._by_node)
                       for group in index.values())

    def close_all(self) -> None:
        with self._lock:
            watchers = [w for index in (self._by_kind, self._by_node)
                        for group in index.values() for w in group]
        for watcher in watchers:
            watcher.close()
