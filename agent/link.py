"""The agent's link to the scheduler: registration, heartbeats, pods, pod status.

    register()   RegisterNode with the node's status (``agent.node``); the scheduler
                 assigns the pod CIDR unless the agent asked for one. Retried with
                 back-off while the scheduler cannot be reached.
    heartbeats   Heartbeat every interval the scheduler names; the full status rides
                 along every ``full_status_every`` seconds or when a condition (or the
                 agent endpoint) changes, else only the lease is renewed. NOT_FOUND:
                 register again, asking for the pod CIDR in use.
    pods         WatchPods(node) feeds ``SchedulerPodSource``, the loop's PodSource.
                 A broken stream is resumed from the last revision seen after a
                 back-off (0.2 s doubling to 5 s); an ERROR with ``relist``, or a stream
                 broken during a list, lists again from revision 0.
    status       each scheduler pod's status, when it changes, by UpdatePodStatuses
                 from ``STATUS_SENDERS`` sender threads: the pod loop never waits on
                 the network, at most one call per pod is in flight, and only the
                 latest status is sent. A call takes every pending status (up to
                 ``STATUS_BATCH``) of pods with none in flight; several senders, so
                 that a pod's Running never waits long behind one slow call.

While the scheduler is away nothing happens to the pods: no event means no change.
When it returns, the list it sends holds the same pods with the same uids, which
compare equal to what the agent runs, so no container restarts.

Static pods are not reported: Kubernetes would publish them as read-only "mirror
pods", which podium leaves out.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from agent.events import LinkRecorder
from agent.retry import Backoff, Outages, cancel
from agent.sources import PodEvent, PodEventType
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, node_pb2, pod_pb2

__all__ = [
    "SCHEDULER_SOURCE",
    "LinkError",
    "SchedulerLink",
    "SchedulerPodSource",
    "stopped_status",
]

log = logging.getLogger("podium.agent")

SCHEDULER_SOURCE = "scheduler"
DEFAULT_HEARTBEAT = 1.0  # seconds, when the scheduler names no interval
CALL_TIMEOUT = 10.0  # seconds for a unary call: a hung scheduler must not hang a thread
# Status calls in flight at once, each for a different pod. With one, a burst of 30 pod
# starts on a node was reported 30 calls in a row to a scheduler busy with the burst
# too: 100 pods on 3 nodes ran at p50 0.7-2.1 s from Create; with four, 0.5-0.75 s.
STATUS_SENDERS = 4
# Statuses in one call at most (the scheduler takes up to 200). In a burst a call
# and its transaction each cost more than the statuses they carry.
STATUS_BATCH = 50
# The channel's own reconnect back-off, kept as short as the link's: gRPC's default
# (up to 120 s) would keep the link down long after the scheduler is back.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 5000)]
# Codes that mean "the scheduler cannot be reached now": retry, keep everything.
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)

StatusFn = Callable[[node_pb2.NodeStatus | None], node_pb2.NodeStatus]
T = TypeVar("T")


class LinkError(Exception):
    """The scheduler refused the node (not a connection problem); the message says why."""


def stopped_status(status: pod_pb2.PodStatus) -> pod_pb2.PodStatus:
    """``status`` as the scheduler must see a stopped pod: phase Succeeded or Failed,
    every container terminated, not ready."""
    out = pod_pb2.PodStatus()
    out.CopyFrom(status)
    if out.phase != "Succeeded":
        out.phase = "Failed"
    for cs in out.container_statuses:
        cs.ready = cs.started = False
        if cs.state.WhichOneof("state") != "terminated":
            cs.state.terminated.CopyFrom(pod_pb2.ContainerStateTerminated(
                exit_code=137, reason="ContainerStatusUnknown",
                message="the container was not running when the pod was stopped"))
    for cond in out.conditions:
        if cond.type in ("Ready", "ContainersReady"):
            cond.status = "False"
    return out


class SchedulerPodSource:
    """The pods WatchPods binds to this node, as PodEvents.

    ``handle`` runs on the watch thread; ``poll`` on the loop's. A pod first seen with
    a deletion_timestamp comes as ADD then REMOVE in one batch: the loop adopts
    whatever of it is on the node (or makes nothing) and stops it, so its end is
    reported either way. ``synced`` turns true when ``poll`` has returned the whole
    first list.
    """

    def __init__(self) -> None:
        self.revision = 0  # resume point: the last revision of a completed list or later
        self.needs_list = True
        self.synced = False
        self._lock = threading.Lock()
        self._queue: list[PodEvent | None] = []  # None marks the end of a list
        self._known: dict[str, pod_pb2.Pod] = {}  # uid → pod as last handed on
        self._deleting: set[str] = set()  # uids whose deletion was handed on
        self._listed: set[str] | None = None  # uids of the list in progress
        self._listed_once = threading.Event()
        # Called on the watch thread after each event: the agent wakes its loop.
        self.notify: Callable[[], None] = _nothing

    # --- the loop's side ----------------------------------------------------------

    def poll(self) -> list[PodEvent]:
        with self._lock:
            queue, self._queue = self._queue, []
        events = [e for e in queue if e is not None]
        if None in queue:
            self.synced = True
        return events

    def wait_synced(self, timeout: float) -> bool:
        """Wait until the first list is complete (its events are queued for ``poll``)."""
        return self._listed_once.wait(timeout)

    def knows(self, uid: str) -> bool:
        """The pod is the scheduler's (bound here, or being deleted), not a static one."""
        with self._lock:
            return uid in self._known or uid in self._deleting

    def deleting(self, uid: str) -> bool:
        with self._lock:
            return uid in self._deleting

    # --- the watch thread's side --------------------------------------------------

    @property
    def listing(self) -> bool:
        """A list was asked for and has not ended (with its BOOKMARK) yet."""
        return self._listed is not None

    def begin_list(self) -> None:
        self._listed = set()

    def handle(self, event: cluster_pb2.WatchEvent) -> None:
        try:
            self._handle(event)
        finally:
            self.notify()

    def _handle(self, event: cluster_pb2.WatchEvent) -> None:
        kind = event.type
        if kind == cluster_pb2.WatchEvent.BOOKMARK:
            self._end_list(event.revision)
            return
        pod = event.object.pod
        uid = pod.metadata.uid
        if kind not in (cluster_pb2.WatchEvent.ADDED, cluster_pb2.WatchEvent.MODIFIED,
                        cluster_pb2.WatchEvent.DELETED) or not uid:
            return
        if self._listed is None and event.revision > 0:
            self.revision = event.revision
        pod = _without_status(pod)
        if kind == cluster_pb2.WatchEvent.DELETED:
            old = self._known.pop(uid, None)
            with self._lock:
                self._deleting.discard(uid)
                if old is not None:
                    self._queue.append(PodEvent(PodEventType.REMOVE, pod, SCHEDULER_SOURCE))
            return
        if self._listed is not None:
            self._listed.add(uid)
        if pod.metadata.HasField("deletion_timestamp"):
            self._delete(uid, pod)
            return
        old = self._known.get(uid)
        self._known[uid] = pod
        if old is None:
            self._put(PodEvent(PodEventType.ADD, pod, SCHEDULER_SOURCE))
        elif old != pod:
            self._put(PodEvent(PodEventType.UPDATE, pod, SCHEDULER_SOURCE))

    def _delete(self, uid: str, pod: pod_pb2.Pod) -> None:
        with self._lock:
            if uid in self._deleting:
                return
            self._deleting.add(uid)
            if self._known.pop(uid, None) is None:
                self._queue.append(PodEvent(PodEventType.ADD, pod, SCHEDULER_SOURCE))
            self._queue.append(PodEvent(PodEventType.REMOVE, pod, SCHEDULER_SOURCE))

    def _end_list(self, revision: int) -> None:
        if revision > 0:
            self.revision = revision
        listed, self._listed = self._listed, None
        if listed is None:
            return
        # Pods no longer bound here (re-placed while the node was away) stop.
        gone = [self._known.pop(uid) for uid in list(self._known) if uid not in listed]
        with self._lock:
            self._deleting &= listed
            self._queue.extend(PodEvent(PodEventType.REMOVE, p, SCHEDULER_SOURCE) for p in gone)
            self._queue.append(None)
        self.needs_list = False
        self._listed_once.set()

    def relist(self) -> None:
        self.needs_list = True

    def _put(self, event: PodEvent) -> None:
        with self._lock:
            self._queue.append(event)


def _nothing() -> None:
    pass


class SchedulerLink:
    """One node's link to the scheduler at ``address`` (``host:port`` or ``unix:PATH``).

    ``status`` gives the node's status (given the last one sent, for transition times).
    ``pod_cidr`` asks for a CIDR; "" takes the one assigned. The link is the pod loop's
    ``StatusListener``; ``source`` is its PodSource. ``stop`` ends every retry and
    thread (``close()`` sets it); the agent passes its own, so a signal during
    registration ends it.
    """

    def __init__(self, address: str, node_name: str, status: StatusFn, pod_cidr: str = "",
                 *, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 full_status_every: float = 10.0) -> None:
        self.address, self.node_name, self.status_fn = address, node_name, status
        self.pod_cidr = pod_cidr
        # The cluster's networks, as the scheduler says at registration ("" before).
        self.cluster_cidr = self.service_cidr = ""
        self.clock = clock
        self.full_status_every = full_status_every
        self.interval = DEFAULT_HEARTBEAT
        self.source = SchedulerPodSource()
        self.stop = stop if stop is not None else threading.Event()
        self.channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self.stub = cluster_pb2_grpc.ClusterServiceStub(self.channel)
        self._last_status: node_pb2.NodeStatus | None = None
        self._last_full = 0.0
        self._call_lock = threading.Lock()
        self._watch_call: grpc.CallIterator[cluster_pb2.WatchEvent] | None = None
        self._pending: dict[str, cluster_pb2.UpdatePodStatusRequest] = {}
        self._sending: set[str] = set()  # pods whose status call is in flight
        self._pending_cv = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._outages = Outages(log, address)
        # The pod workers' recorder: Events through RecordEvents, from a thread of its own.
        self.recorder = LinkRecorder(self.stub, node_name, self.source.knows, stop=self.stop)

    # --- registration and heartbeats ----------------------------------------------

    def register(self) -> node_pb2.Node:
        """RegisterNode, retried with back-off until it is answered; the stored Node.

        LinkError if the scheduler refuses the node, or if ``stop`` is set first."""
        return self._retrying("register", self._register_once)

    def _register_once(self) -> node_pb2.Node:
        status = self.status_fn(self._last_status)
        node = node_pb2.Node(status=status)
        node.metadata.name = self.node_name
        node.spec.pod_cidr = self.pod_cidr
        reply = self.stub.RegisterNode(cluster_pb2.RegisterNodeRequest(node=node),
                                       timeout=CALL_TIMEOUT)
        if not reply.node.spec.pod_cidr:
            raise LinkError(f"scheduler {self.address}: registered node {self.node_name} "
                            "without a pod CIDR")
        # Re-registering asks for this CIDR again: the node's network is built on it.
        self.pod_cidr = reply.node.spec.pod_cidr
        self.cluster_cidr, self.service_cidr = reply.cluster_cidr, reply.service_cidr
        self._set_interval(reply.heartbeat_interval.ToTimedelta().total_seconds())
        self._last_status, self._last_full = status, self.clock()
        log.info("registered node %s with %s: pod CIDR %s", self.node_name, self.address,
                 self.pod_cidr)
        return reply.node

    def heartbeat(self) -> None:
        """One heartbeat (the heartbeat thread's step); NOT_FOUND registers again."""
        from agent.node import conditions_of

        current = self.status_fn(self._last_status)
        last = self._last_status
        full = (last is None or self.clock() - self._last_full >= self.full_status_every
                or conditions_of(current) != conditions_of(last)
                or current.daemon_endpoints != last.daemon_endpoints)
        request = cluster_pb2.HeartbeatRequest(node_name=self.node_name)
        if full:
            request.status.CopyFrom(current)
        try:
            reply = self.stub.Heartbeat(request, timeout=max(CALL_TIMEOUT, 2 * self.interval))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                log.warning("scheduler %s does not know node %s: registering again",
                            self.address, self.node_name)
                self._register_once()
                return
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                # A scheduler that went silent leaves the watch stream hanging too.
                self._cancel_watch()
            raise
        self._set_interval(reply.heartbeat_interval.ToTimedelta().total_seconds())
        if full:
            self._last_status, self._last_full = current, self.clock()

    def _set_interval(self, seconds: float) -> None:
        self.interval = seconds if seconds > 0 else DEFAULT_HEARTBEAT

    def _heartbeats(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.heartbeat()
                self._outages.up("heartbeat")
            except grpc.RpcError as e:
                self._outages.down("heartbeat", e)
            except LinkError as e:
                log.error("%s", e)

    # --- pods -----------------------------------------------------------------------

    def _watch(self) -> None:
        backoff = Backoff()
        while not self.stop.is_set():
            source = self.source
            if source.needs_list:
                source.begin_list()
            request = cluster_pb2.WatchPodsRequest(
                node_name=self.node_name, from_revision=0 if source.needs_list else source.revision)
            try:
                call = self.stub.WatchPods(request)
                with self._call_lock:
                    self._watch_call = call
                if self.stop.is_set():
                    cancel(call)
                for event in call:
                    backoff.reset()
                    self._outages.up("watch")
                    if event.type == cluster_pb2.WatchEvent.ERROR:
                        log.warning("scheduler %s: pod watch: %s%s", self.address,
                                    event.message, " (listing again)" if event.relist else "")
                        if event.relist:
                            source.relist()
                        break
                    source.handle(event)
            except grpc.RpcError as e:
                if self.stop.is_set():
                    return
                # NOT_FOUND too is retried: the heartbeat registers the node again.
                self._outages.down("watch", e)
            finally:
                with self._call_lock:
                    self._watch_call = None
            if source.listing:  # broken during a list: it is incomplete
                source.relist()
            self.stop.wait(backoff.next())

    def _cancel_watch(self) -> None:
        with self._call_lock:
            if self._watch_call is not None:
                cancel(self._watch_call)

    # --- pod status (StatusListener) ------------------------------------------------

    def pod_status(self, pod: pod_pb2.Pod, source: str) -> None:
        if source == SCHEDULER_SOURCE:  # static pods: no mirror pods (module docstring)
            self._offer(pod, pod.status)

    def pod_stopped(self, pod: pod_pb2.Pod, source: str) -> None:
        # Only a deletion waits for the agent's word; a pod stopped because it is no
        # longer bound here belongs to someone else now.
        if source == SCHEDULER_SOURCE and self.source.deleting(pod.metadata.uid):
            self._offer(pod, stopped_status(pod.status))

    def _offer(self, pod: pod_pb2.Pod, status: pod_pb2.PodStatus) -> None:
        meta = pod.metadata
        request = cluster_pb2.UpdatePodStatusRequest(
            node_name=self.node_name, namespace=meta.namespace, name=meta.name, uid=meta.uid,
            status=status)
        with self._pending_cv:
            self._pending[meta.uid] = request  # replaces one not sent yet: latest only
            self._pending_cv.notify()

    def _send_statuses(self) -> None:
        """One of the sender threads: takes the pending statuses of pods with no call
        in flight, oldest first, sends them in one call, and lets those pods' next
        statuses go once it is done."""
        backoff = Backoff()
        while not self.stop.is_set():
            with self._pending_cv:
                uids = self._unsent()
                while not uids and not self.stop.is_set():
                    self._pending_cv.wait()
                    uids = self._unsent()
                if not uids:
                    return
                requests = [self._pending.pop(uid) for uid in uids]
                self._sending.update(uids)
            try:
                answer = self.stub.UpdatePodStatuses(cluster_pb2.UpdatePodStatusesRequest(
                    statuses=requests), timeout=CALL_TIMEOUT)
                backoff.reset()
                self._outages.up("status")
                for request, error in zip(requests, answer.errors, strict=False):
                    if error:
                        log.warning("scheduler %s: status of pod %s/%s: %s", self.address,
                                    request.namespace, request.name, error)
            except grpc.RpcError as e:
                if e.code() in _TRANSIENT:
                    with self._pending_cv:
                        for uid, request in zip(uids, requests, strict=True):
                            self._pending.setdefault(uid, request)  # unless a newer came
                    self._outages.down("status", e)
                    self.stop.wait(backoff.next())
                else:
                    log.warning("scheduler %s: status of %d pod(s): %s", self.address,
                                len(requests), e.details())
            finally:
                with self._pending_cv:
                    self._sending.difference_update(uids)
                    self._pending_cv.notify_all()  # those pods' newer statuses may go now

    def _unsent(self) -> list[str]:
        """The pods whose statuses wait with no call of their own in flight, longest
        waiting first, at most ``STATUS_BATCH`` (called with ``_pending_cv`` held);
        none once stopping."""
        if self.stop.is_set():
            return []
        unsent = (uid for uid in self._pending if uid not in self._sending)
        return list(itertools.islice(unsent, STATUS_BATCH))

    # --- life -----------------------------------------------------------------------

    def start(self) -> None:
        """The heartbeat, watch and status threads (after ``register``)."""
        senders = [(f"status-{i}", self._send_statuses) for i in range(STATUS_SENDERS)]
        for name, target in (("heartbeat", self._heartbeats), ("watch", self._watch),
                             *senders, ("events", self.recorder.run)):
            thread = threading.Thread(target=target, name=f"podium-link-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        self._cancel_watch()
        with self._pending_cv:
            self._pending_cv.notify_all()
        self.recorder.wake()
        for thread in self._threads:
            thread.join(timeout=CALL_TIMEOUT)
        self._threads.clear()
        self.channel.close()

    # --- helpers --------------------------------------------------------------------

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        backoff = Backoff()
        while True:
            try:
                result = call()
                self._outages.up(what)
                return result
            except grpc.RpcError as e:
                if e.code() not in _TRANSIENT:
                    raise LinkError(f"scheduler {self.address}: {what} node "
                                    f"{self.node_name}: {e.details()}") from None
                self._outages.down(what, e)
            if self.stop.wait(backoff.next()):
                raise LinkError(f"scheduler {self.address}: stopped before {what} "
                                f"node {self.node_name} succeeded")


def _without_status(pod: pod_pb2.Pod) -> pod_pb2.Pod:
    """The pod as the agent compares it: what the agent itself reported (its status,
    and the resource_version that reporting bumps) is not a change to act on."""
    out = pod_pb2.Pod()
    out.CopyFrom(pod)
    out.ClearField("status")
    out.metadata.resource_version = ""
    return out
