"""The loop every controller shares: keep a cache, queue keys, reconcile.

    Controller.step()     one pass: sync the cache (list or drain the
                          watch), queue the keys the changes touch, then
                          reconcile every key that is due
    Controller.run(stop)  step() until `stop` is set, waiting on the watch
                          between passes

A subclass says which kinds it watches (`kinds`), which keys a change
touches (`keys_for`) and how to reconcile one key (`reconcile`, returning
when to look again). A reconcile that raises is logged and retried later
with a growing delay; a Conflict (someone wrote first) is retried soon.
"""

from __future__ import annotations

import abc
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable

from scheduler.cluster import Cluster
from scheduler.controllers.informer import Informer, Notice
from scheduler.objects import Key
from scheduler.store.base import Conflict, NotFound

log = logging.getLogger(__name__)

Clock = Callable[[], float]

CONFLICT_RETRY = 0.05
ERROR_RETRY_MIN = 0.2
ERROR_RETRY_MAX = 30.0
# Longest wait on the watch in run(), so `stop` is noticed this fast.
MAX_WAIT = 0.2
# Once a change wakes a running controller, it lets more arrive for this long
# before it reconciles: under a burst (a pod changes four times as it starts),
# each controller then wakes once per period instead of once per change, as
# Kubernetes batches its endpoint updates.
SETTLE = 0.02
# Every key is reconciled this often even if nothing changes.
RESYNC = 30.0


class WorkQueue:
    """Keys to reconcile, each at most once, at the earliest time asked for."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []

    def add(self, key: Key, after: float = 0.0) -> None:
        at = self._clock() + max(after, 0.0)
        if key in self._due and self._due[key] <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, key))

    def pop_due(self) -> list[Key]:
        now = self._clock()
        keys: list[Key] = []
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._due.get(key) == at:
                del self._due[key]
                keys.append(key)
        return keys

    def next_in(self) -> float | None:
        """Seconds until the next key is due (0 if one is), None if empty."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(self._heap[0][0] - self._clock(), 0.0)

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due


class Controller(abc.ABC):
    name = "controller"
    kinds: tuple[str, ...] = ()

    def __init__(self, cluster: Cluster, clock: Clock = time.monotonic,
                 wall: Clock = time.time) -> None:
        self.cluster = cluster
        self.clock = clock
        self.wall = wall
        self.informer = Informer(cluster, self.kinds)
        self.queue = WorkQueue(clock)
        self._failures: dict[Key, int] = {}
        self._next_resync = clock() + RESYNC

    @abc.abstractmethod
    def keys_for(self, notice: Notice) -> Iterable[Key]:
        """The keys to reconcile because of this change."""

    @abc.abstractmethod
    def reconcile(self, key: Key) -> float | None:
        """Brings one key towards what it wants; returns seconds until it
        should be looked at again (None: when something changes)."""

    def resync_keys(self) -> Iterable[Key]:
        """Keys reconciled every RESYNC seconds even without changes."""
        return ()

    def step(self, timeout: float = 0.0, settle: float = 0.0) -> None:
        """One pass; waits up to `timeout` for a change if none is due, then
        `settle` more for others (Informer.sync)."""
        for notice in self.informer.sync(timeout, settle):
            for key in self.keys_for(notice):
                self.queue.add(key)
        if self.clock() >= self._next_resync:
            self._next_resync = self.clock() + RESYNC
            for key in self.resync_keys():
                self.queue.add(key)
        for key in self.queue.pop_due():
            self._reconcile_one(key)

    def _reconcile_one(self, key: Key) -> None:
        try:
            after = self.reconcile(key)
        except (Conflict, NotFound) as err:
            # The cache was behind a write; the watch brings it soon.
            log.debug("%s: %s: %s; retrying", self.name, key, err)
            self.queue.add(key, CONFLICT_RETRY)
            return
        except Exception:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(ERROR_RETRY_MIN * 2 ** (failures - 1), ERROR_RETRY_MAX)
            log.exception("%s: reconciling %s failed (attempt %d); retrying in %.1fs",
                          self.name, key, failures, delay)
            self.queue.add(key, delay)
            return
        self._failures.pop(key, None)
        if after is not None:
            self.queue.add(key, after)

    def run(self, stop: threading.Event) -> None:
        """step() until `stop` is set; a failing pass is logged, never fatal."""
        failures = 0
        while not stop.is_set():
            due = self.queue.next_in()
            timeout = MAX_WAIT if due is None else min(due, MAX_WAIT)
            try:
                self.step(timeout, SETTLE)
                failures = 0
            except Exception:
                failures += 1
                delay = min(ERROR_RETRY_MIN * 2 ** (failures - 1), ERROR_RETRY_MAX)
                log.exception("%s: pass failed; retrying in %.1fs", self.name, delay)
                stop.wait(delay)

    def close(self) -> None:
        self.informer.close()
