"""``PodLoop``: the agent's one loop from pod source to pod workers.

Every ``step``: poll the source, apply its events (ADD or UPDATE → a worker per pod,
made on first sight; REMOVE → terminate the pod with its grace period; ERROR → log
it), then call ``sync`` on every worker in turn (sequentially: a sync never
sleeps) and keep the status it returns. A failure in one pod is logged and recorded
in that pod's status (reason ``SyncError``); the other pods go on.

Terminations can take a grace period (30 s by default), so they go to ``spawn``
(a thread in the agent; inline in tests) while the loop goes on with the rest. A pod
added again while its earlier self is still being removed waits for that to end.

What the gRPC server reads is ``pods()``: a snapshot (a new dict every step, each
Pod carrying its status), safe to read from other threads without a lock.

The agent runs a step whenever something happens (``wake``: a first sync finished
on a starter thread, a manifest changed), not only every period; so with
``sync_period`` a running pod is synced at most that often, however often the
loop steps, and a step that comes early only does what is new.

A ``StatusListener`` (the scheduler link) hears of each pod whose status changed,
on the loop's thread, and of each pod once it is stopped and removed (a REMOVE's
pod may carry ``metadata.deletion_grace_period_seconds``: that grace period is used).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from agent.sources import PodEvent, PodEventType, PodSource
from proto.podium.v1 import pod_pb2

log = logging.getLogger("podium.agent")


class Worker(Protocol):
    def sync(self, pod: pod_pb2.Pod | None = None) -> pod_pb2.PodStatus: ...
    def terminate(self, grace: float | None = None) -> pod_pb2.PodStatus: ...


class StatusListener(Protocol):
    """Told about pods' statuses; must return at once (no network on these calls)."""

    def pod_status(self, pod: pod_pb2.Pod, source: str) -> None:
        """``pod`` (its status included) has a status different from the last one."""

    def pod_stopped(self, pod: pod_pb2.Pod, source: str) -> None:
        """``pod`` is gone from the node: its containers stopped, its parts removed
        (or it never started). Called from a termination thread."""


MakeWorker = Callable[[pod_pb2.Pod], Worker]
Spawn = Callable[[Callable[[], None]], None]


def run_inline(task: Callable[[], None]) -> None:
    task()


def run_in_thread(task: Callable[[], None]) -> None:
    threading.Thread(target=task, name="podium-terminate", daemon=True).start()


@dataclass
class _Entry:
    pod: pod_pb2.Pod
    worker: Worker | None
    source: str
    status: pod_pb2.PodStatus
    changed: bool = False  # the pod changed since the worker last saw it
    terminating: bool = False
    starting: bool = False  # its first sync runs on a starter thread
    told: pod_pb2.PodStatus | None = None  # the status the listener last heard
    removal: tuple[float | None] | None = None  # a REMOVE (its grace) that came meanwhile
    next_sync: float = 0.0  # clock time its next sync is due (with a sync period)
    published: pod_pb2.PodStatus | None = None  # ``status`` as ``_publish_one`` last saw it
    # The Pod the view holds for this entry, with the pod and status it was made of: a
    # step rebuilds only what changed, not a copy of every pod each time it wakes.
    shown: tuple[pod_pb2.Pod, pod_pb2.Pod, pod_pb2.PodStatus] | None = None


class PodLoop:
    def __init__(self, source: PodSource, make_worker: MakeWorker,
                 clock: Callable[[], float] = time.monotonic, spawn: Spawn = run_inline,
                 listener: StatusListener | None = None, starters: int = 0,
                 wake: Callable[[], None] | None = None, sync_period: float = 0.0) -> None:
        self.source = source
        self.listener = listener
        self.make_worker = make_worker
        self.clock = clock
        self.spawn = spawn
        self.source_errors: dict[str, str] = {}
        self.last_step = 0.0  # clock time the last step ended, for health
        self._entries: dict[str, _Entry] = {}
        self._deferred: dict[str, tuple[pod_pb2.Pod, str]] = {}  # added while terminating
        self._lock = threading.Lock()  # guards _entries against termination threads
        # A new pod's first sync (sandbox, images, containers) takes tens of
        # milliseconds; with starters, up to that many new pods start at once on
        # their own threads while the loop goes on. 0: inline (tests).
        self._starters = (ThreadPoolExecutor(starters, thread_name_prefix="podium-start")
                          if starters else None)
        self._view: dict[str, pod_pb2.Pod] = {}
        self._wake = wake  # called when a starter thread has finished a first sync
        self.sync_period = sync_period

    # --- what others read ---------------------------------------------------------

    def pods(self) -> list[pod_pb2.Pod]:
        return list(self._view.values())

    def worker(self, uid: str) -> Worker | None:
        entry = self._entries.get(uid)
        return entry.worker if entry is not None else None

    # --- driving ------------------------------------------------------------------

    def insert(self, pod: pod_pb2.Pod, worker: Worker, source: str) -> None:
        """Put in a worker made elsewhere (an adopted pod after an agent restart)."""
        self._entries[pod.metadata.uid] = _Entry(pod, worker, source, _pending())

    def step(self) -> None:
        try:
            events = self.source.poll()
        except Exception as e:  # noqa: BLE001 - a broken source must not stop the pods
            log.error("pod source: %s", e)
            events = []
        self.apply(events)
        self._start_deferred()
        with self._lock:
            entries = list(self._entries.values())
        now = self.clock()
        for entry in entries:
            if entry.removal is not None and not entry.starting:
                self._remove(entry.pod.metadata.uid, entry.removal[0])
                continue
            if entry.terminating or entry.starting:
                continue
            if entry.worker is None and self._starters is not None:
                entry.starting = True
                self._starters.submit(self._first_sync, entry)
                continue
            if entry.worker is not None and not entry.changed and now < entry.next_sync:
                # Synced lately (by a starter thread, maybe: its status is new then).
                if entry.status is not entry.published:
                    self._publish_one(entry)
                continue
            entry.next_sync = now + self.sync_period
            self._sync(entry)
            # Each pod's status is shown as soon as it is known, not after the
            # whole batch: a burst of new pods must not wait for the slowest. A
            # worker hands back the same status object while nothing changed.
            fresh = _shows(entry, entry.pod, entry.status)
            if entry.status is not entry.published or not fresh:
                self._publish_one(entry)
        self._publish()
        self.last_step = self.clock()

    def apply(self, events: list[PodEvent]) -> None:
        for event in events:
            if event.type is PodEventType.ERROR or event.pod is None:
                log.error("%s", event.message or f"{event.source}: unusable pod")
                self.source_errors[event.source] = event.message
                continue
            self.source_errors.pop(event.source, None)
            for warning in event.warnings:
                log.warning("%s: %s", event.source, warning)
            if event.type is PodEventType.REMOVE:
                meta = event.pod.metadata
                grace = (float(meta.deletion_grace_period_seconds)
                         if meta.HasField("deletion_grace_period_seconds") else None)
                self._remove(meta.uid, grace)
            else:
                self._want(event.pod, event.source)

    def run(self, stop: threading.Event, period: float = 0.2) -> None:
        while not stop.is_set():
            self.step()
            stop.wait(period)
        if self._starters is not None:
            self._starters.shutdown(wait=True)

    def _first_sync(self, entry: _Entry) -> None:
        """On a starter thread; the loop publishes the status at its next step."""
        try:
            entry.next_sync = self.clock() + self.sync_period
            self._sync(entry)
        finally:
            entry.starting = False
            if self._wake is not None:
                self._wake()  # so its status is published now, not at the next period

    # --- decisions ----------------------------------------------------------------

    def _want(self, pod: pod_pb2.Pod, source: str) -> None:
        uid = pod.metadata.uid
        entry = self._entries.get(uid)
        if entry is not None and entry.terminating:
            self._deferred[uid] = (pod, source)
            return
        if entry is None:
            self._entries[uid] = _Entry(pod, None, source, _pending())
            return
        old = [c.name for c in entry.pod.spec.containers]
        new = [c.name for c in pod.spec.containers]
        if old != new and entry.worker is not None:
            # A pod's containers cannot change in place: replace the pod, as kubelet does.
            self._remove(uid)
            self._deferred[uid] = (pod, source)
            return
        entry.pod, entry.source, entry.changed = pod, source, True

    def _remove(self, uid: str, grace: float | None = None) -> None:
        self._deferred.pop(uid, None)
        entry = self._entries.get(uid)
        if entry is None or entry.terminating:
            return
        if entry.starting:  # stopped once its start is over, by the loop
            entry.removal = (grace,)
            return
        worker = entry.worker
        if worker is None:
            del self._entries[uid]
            self._stopped(entry, entry.status)
            return
        entry.terminating = True

        def terminate() -> None:
            status = entry.status
            try:
                status = worker.terminate(grace)
            except Exception as e:  # noqa: BLE001 - logged; the pod is dropped all the same
                log.error("pod %s: %s", _name(entry.pod), e)
            with self._lock:
                if self._entries.get(uid) is entry:
                    del self._entries[uid]
            self._stopped(entry, status)

        self.spawn(terminate)

    def _start_deferred(self) -> None:
        for uid, (pod, source) in list(self._deferred.items()):
            if uid not in self._entries:
                del self._deferred[uid]
                self._entries[uid] = _Entry(pod, None, source, _pending())

    def _sync(self, entry: _Entry) -> None:
        try:
            if entry.worker is None:
                entry.worker = self.make_worker(entry.pod)
                entry.changed = False
            pod = entry.pod if entry.changed else None
            entry.changed = False
            entry.status = entry.worker.sync(pod)
        except Exception as e:  # noqa: BLE001 - one pod's failure never stops the others
            log.error("pod %s: %s", _name(entry.pod), e)
            status = pod_pb2.PodStatus()
            status.CopyFrom(entry.status)
            status.reason, status.message = "SyncError", str(e)
            entry.status = status

    def _publish_one(self, entry: _Entry) -> None:
        entry.published = entry.status
        pod = self._view_pod(entry)
        view = dict(self._view)  # readers hold the old dict: never change it in place
        view[entry.pod.metadata.uid] = pod
        self._view = view
        # Compared with what the listener heard, not with the view: a pod started on
        # a starter thread reaches the view (at the step's end) before the listener.
        if self.listener is not None and entry.told != pod.status:
            entry.told = pod.status
            self.listener.pod_status(pod, entry.source)

    def _stopped(self, entry: _Entry, status: pod_pb2.PodStatus) -> None:
        if self.listener is None:
            return
        pod = pod_pb2.Pod()
        pod.CopyFrom(entry.pod)
        pod.status.CopyFrom(status)
        try:
            self.listener.pod_stopped(pod, entry.source)
        except Exception as e:  # noqa: BLE001 - the loop outlives a broken listener
            log.error("pod %s: reporting it stopped: %s", _name(entry.pod), e)

    def _publish(self) -> None:
        with self._lock:
            entries = list(self._entries.items())
        old = self._view
        view = {uid: self._view_pod(entry) for uid, entry in entries}
        # Readers hold the old dict: a new one only when a pod came, went or changed.
        if len(view) != len(old) or any(old.get(uid) is not pod for uid, pod in view.items()):
            self._view = view

    def _view_pod(self, entry: _Entry) -> pod_pb2.Pod:
        """The pod with its status as the view shows it, made again only on a change."""
        # Read once: a starter thread may hand the entry a new status meanwhile.
        source, status = entry.pod, entry.status
        if entry.shown is None or not _shows(entry, source, status):
            pod = pod_pb2.Pod()
            pod.CopyFrom(source)
            pod.status.CopyFrom(status)
            entry.shown = (pod, source, status)
        return entry.shown[0]


def _shows(entry: _Entry, pod: pod_pb2.Pod, status: pod_pb2.PodStatus) -> bool:
    """Whether the view's pod for ``entry`` was made of ``pod`` and ``status``."""
    return entry.shown is not None and entry.shown[1] is pod and entry.shown[2] is status


def _pending() -> pod_pb2.PodStatus:
    return pod_pb2.PodStatus(phase="Pending")


def _name(pod: pod_pb2.Pod) -> str:
    return f"{pod.metadata.namespace or 'default'}/{pod.metadata.name}"
