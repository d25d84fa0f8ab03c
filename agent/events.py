"""Events about pods, as the kubelet records them (Pulling, Started, BackOff, ...).

    Recorder        the seam the pod workers call: ``event(pod, reason, message, type,
                    field_path=...)``; it never blocks and never raises
    LogRecorder     the standalone agent's: one log line per event, nothing else
    LinkRecorder    with a scheduler (``agent.link`` makes one): logs the event too, then
                    sends it as an Event object by ClusterService.RecordEvents from a
                    thread of its own, so the pod loop never waits on the network

The LinkRecorder coalesces as the kubelet's event correlator does: the same
(pod uid, field path, reason, message) again within ``window`` seconds is the same
Event with its count raised and last_timestamp moved on (the scheduler updates the
Event of that name; while it is still queued only the newest count is sent). What
is queued goes in one call, up to ``BATCH`` Events: a burst of pod starts makes
three Events a pod, and a call each cost the agent and the scheduler more than the
pods' own start. The queue is bounded: a new Event that finds it full is dropped
and counted in ``dropped``. Events about static pods are only logged: the scheduler
has no object they could refer to.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, core_pb2, pod_pb2

__all__ = [
    "COMPONENT",
    "NORMAL",
    "WARNING",
    "LinkRecorder",
    "LogRecorder",
    "Recorder",
    "container_path",
    "make_event",
]

log = logging.getLogger("podium.agent")

COMPONENT = "podium-agent"
NORMAL, WARNING = "Normal", "Warning"
CALL_TIMEOUT = 10.0  # seconds for one send: a hung scheduler must not hang the thread
BATCH = 100  # Events in one call at most (the scheduler takes up to 200)
SETTLE = 0.05  # seconds the sender lets a burst of Events gather before it calls
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)


class Recorder(Protocol):
    def event(self, pod: pod_pb2.Pod, reason: str, message: str, type: str = NORMAL,
              *, field_path: str = "") -> None: ...


def container_path(name: str, init: bool = False) -> str:
    """The involved object's field path for one container, as the kubelet writes it."""
    return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"


def _describe(pod: pod_pb2.Pod, reason: str, message: str, field_path: str) -> str:
    meta = pod.metadata
    where = f" {field_path}" if field_path else ""
    return f"pod {meta.namespace or 'default'}/{meta.name}{where}: {reason}: {message}"


class LogRecorder:
    """Events as log lines: Warning events at warning level, the rest at info."""

    def event(self, pod: pod_pb2.Pod, reason: str, message: str, type: str = NORMAL,
              *, field_path: str = "") -> None:
        level = logging.WARNING if type == WARNING else logging.INFO
        log.log(level, "event %s", _describe(pod, reason, message, field_path))


def _nanos(when: datetime) -> int:
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def make_event(pod: pod_pb2.Pod, reason: str, message: str, type: str, field_path: str,
               host: str, when: datetime, nanos: int | None = None) -> core_pb2.Event:
    """A new Event about ``pod`` (count 1), named ``<pod>.<16 hex digits>`` from the
    time in nanoseconds (``nanos``, else ``when``'s), as the kubelet names them."""
    meta = pod.metadata
    event = core_pb2.Event(reason=reason, message=message, type=type, count=1)
    if nanos is None:
        nanos = _nanos(when)
    event.metadata.name = f"{meta.name}.{nanos & (2**64 - 1):016x}"
    event.metadata.namespace = meta.namespace or "default"
    ref = event.involved_object
    ref.kind, ref.api_version = "Pod", "v1"
    ref.name, ref.namespace, ref.uid = meta.name, meta.namespace or "default", meta.uid
    ref.field_path = field_path
    event.source.component, event.source.host = COMPONENT, host
    event.first_timestamp.CopyFrom(_stamp(when))
    event.last_timestamp.CopyFrom(_stamp(when))
    return event


@dataclass
class _Memo:
    event: core_pb2.Event
    seen: float  # clock of the latest repeat


_Key = tuple[str, str, str, str]  # (pod uid, field path, reason, message)


class LinkRecorder:
    """Events sent to the scheduler at ``stub``; ``is_scheduler_pod(uid)`` tells the
    pods it knows from the static ones. ``run`` is the sending thread's body; it ends
    when ``stop`` is set (``wake`` makes it notice at once)."""

    def __init__(self, stub: cluster_pb2_grpc.ClusterServiceStub, node_name: str,
                 is_scheduler_pod: Callable[[str], bool], *,
                 stop: threading.Event | None = None, capacity: int = 1000,
                 window: float = 600.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC),
                 retry_delay: float = 1.0, settle: float = SETTLE) -> None:
        self.stub, self.node_name = stub, node_name
        self.is_scheduler_pod = is_scheduler_pod
        self.stop = stop if stop is not None else threading.Event()
        self.capacity, self.window = capacity, window
        self.clock, self.wall = clock, wall
        self.retry_delay = retry_delay
        self.settle = settle
        self.dropped = 0  # new Events that found the queue full
        self.sent = 0  # events the scheduler answered for
        self._logger = LogRecorder()
        self._cv = threading.Condition()
        self._memos: dict[_Key, _Memo] = {}
        self._queue: dict[str, _Memo] = {}  # Event name → its memo, oldest first
        self._last_nanos = 0  # names from the time, kept apart when the clock stands still

    # --- the pod workers' side -----------------------------------------------------

    def event(self, pod: pod_pb2.Pod, reason: str, message: str, type: str = NORMAL,
              *, field_path: str = "") -> None:
        self._logger.event(pod, reason, message, type, field_path=field_path)
        uid = pod.metadata.uid
        if not uid or not self.is_scheduler_pod(uid):
            return
        key = (uid, field_path, reason, message)
        now = self.clock()
        with self._cv:
            memo = self._memos.get(key)
            if memo is not None and now - memo.seen <= self.window:
                memo.seen = now
                memo.event.count += 1
                memo.event.last_timestamp.CopyFrom(_stamp(self.wall()))
                name = memo.event.metadata.name
            else:
                when = self.wall()
                self._last_nanos = max(_nanos(when), self._last_nanos + 1)
                memo = _Memo(make_event(pod, reason, message, type, field_path,
                                        self.node_name, when, self._last_nanos), now)
                name = memo.event.metadata.name
                self._forget_old(now)
                self._memos[key] = memo
            if name not in self._queue:
                if len(self._queue) >= self.capacity:
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 100 == 0:
                        log.warning("events for the scheduler: queue full (%d), %d dropped",
                                    self.capacity, self.dropped)
                    return
                self._queue[name] = memo
            self._cv.notify()

    def _forget_old(self, now: float) -> None:
        if len(self._memos) < 4 * self.capacity:
            return
        for key in [k for k, m in self._memos.items() if now - m.seen > self.window]:
            del self._memos[key]

    def pending(self) -> int:
        with self._cv:
            return len(self._queue)

    # --- the sending thread ----------------------------------------------------------

    def run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self.stop.is_set():
                    self._cv.wait()
            # Nobody waits on an Event: let the others of its burst gather, for one
            # call and one wake-up of this thread where there would be many.
            if self.stop.wait(self.settle):
                return
            with self._cv:
                names = list(itertools.islice(self._queue, BATCH))
                memos = [self._queue.pop(name) for name in names]
                events = []
                for memo in memos:  # copied: a repeat may raise the count meanwhile
                    event = core_pb2.Event()
                    event.CopyFrom(memo.event)
                    events.append(event)
            try:
                answer = self.stub.RecordEvents(cluster_pb2.RecordEventsRequest(
                    node_name=self.node_name, events=events), timeout=CALL_TIMEOUT)
            except grpc.RpcError as e:
                if e.code() in _TRANSIENT:
                    with self._cv:
                        for name, memo in zip(names, memos, strict=True):
                            self._queue.setdefault(name, memo)
                    self.stop.wait(self.retry_delay)
                else:
                    log.warning("scheduler: %d event(s) not recorded: %s", len(events),
                                e.details() or e.code().name)
                continue
            for event, error in zip(events, answer.errors, strict=False):
                if error:
                    log.warning("scheduler: event %s/%s not recorded: %s",
                                event.metadata.namespace, event.metadata.name, error)
            with self._cv:
                self.sent += len(events)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()
