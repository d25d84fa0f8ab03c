"""Placer: keeps a Snapshot and a PodQueue current from the cluster's watches
and binds each pending pod to the node `Framework.decide` picks.

The loop is the only part that does I/O. It assumes its own binds at once
(the bound pod returned by `Cluster.bind` goes into the snapshot), so a burst
of pods spreads before the watch echoes the binds back. A Conflict on bind
means the pod changed since it was read: it is dropped from this round and
the watch brings the new version back into line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from google.protobuf import timestamp_pb2

from proto.podium.v1 import cluster_pb2, pod_pb2
from scheduler.cluster import Cluster
from scheduler.objects import wrap
from scheduler.placement.framework import Decision, Framework
from scheduler.placement.queue import PodQueue, is_pending
from scheduler.placement.snapshot import Snapshot, pod_key
from scheduler.store.base import (
    Change,
    Compacted,
    Conflict,
    EventType,
    NotFound,
    StoreError,
    TooFarBehind,
    Watch,
)

log = logging.getLogger(__name__)

UNSCHEDULABLE = "Unschedulable"


class Placer:
    """`step()` does one round synchronously (tests drive it); `run(stop)`
    repeats it until `stop` is set, waiting on the pod watch in between."""

    def __init__(self, cluster: Cluster, framework: Framework | None = None, *,
                 clock: Callable[[], float] = time.monotonic, flush_after: float = 30.0,
                 poll_interval: float = 0.1, batch: int = 64) -> None:
        self.cluster = cluster
        self.framework = framework or Framework()
        self.clock = clock
        self.flush_after = flush_after
        self.poll_interval = poll_interval
        # Pods decided per step in run(), between which the watches are read
        # and `stop` is checked; their binds share one commit, which holds
        # other writers back, so a round stays a few tens of milliseconds.
        self.batch = batch
        self.snapshot = Snapshot()
        self.queue = PodQueue(clock, flush_after)
        self._pod_watch: Watch | None = None
        self._node_watch: Watch | None = None
        self._last_flush = clock()

    # --- the loop ---

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.step(limit=self.batch)
                    if self.queue.active == 0:
                        self._wait()
                except Exception:
                    # One bad round must not stop placement; relist and go on.
                    log.exception("placement round failed; relisting in 1 s")
                    self._close()
                    stop.wait(1.0)
        finally:
            self._close()

    def step(self, limit: int | None = None) -> int:
        """Reads what the watches have, then decides the pods in line (at
        most `limit`); returns how many were bound."""
        if self._pod_watch is None:
            self.relist()
        self._drain()
        now = self.clock()
        if now - self._last_flush >= min(1.0, self.flush_after):
            self._last_flush = now
            self.queue.flush()
        bound = 0
        done = 0
        # One commit for the round's binds and events: a durable write costs
        # an fsync, a decision a fraction of a millisecond.
        with self.cluster.batch():
            while limit is None or done < limit:
                pod = self.queue.pop()
                if pod is None:
                    break
                done += 1
                bound += self._place(pod)
        return bound

    def relist(self) -> None:
        """Rebuilds the snapshot and the queue from lists, and watches from
        their revisions."""
        self._close()
        nodes, node_rev = self.cluster.list("Node")
        pods, pod_rev = self.cluster.list("Pod")
        self.snapshot = Snapshot.build([o.node for o in nodes], [o.pod for o in pods])
        self.queue = PodQueue(self.clock, self.flush_after)
        pending = [o.pod for o in pods if is_pending(o.pod)]
        pending.sort(key=lambda p: (p.metadata.creation_timestamp.seconds,
                                    p.metadata.creation_timestamp.nanos))
        for pod in pending:
            self.queue.update(pod)
        self._node_watch = self.cluster.watch("Node", "", node_rev)
        self._pod_watch = self.cluster.watch("Pod", "", pod_rev)

    def close(self) -> None:
        self._close()

    # --- keeping current ---

    def _close(self) -> None:
        for w in (self._pod_watch, self._node_watch):
            if w is not None:
                w.close()
        self._pod_watch = self._node_watch = None

    def _drain(self) -> None:
        try:
            for w in (self._node_watch, self._pod_watch):
                while w is not None and (change := w.next(timeout=0)) is not None:
                    self._apply(change)
        except (Compacted, TooFarBehind) as e:
            log.info("watch lost its place (%s); relisting", e)
            self.relist()

    def _wait(self) -> None:
        """Blocks up to poll_interval for a pod change (node changes are read
        by the next step)."""
        w = self._pod_watch
        if w is None:
            return
        try:
            change = w.next(timeout=self.poll_interval)
        except (Compacted, TooFarBehind) as e:
            log.info("pod watch lost its place (%s); relisting", e)
            self._close()
            return
        if change is not None:
            self._apply(change)

    def _apply(self, change: Change) -> None:
        obj = change.object
        kind = obj.WhichOneof("kind")
        room = False
        if kind == "node":
            if change.type == EventType.DELETED:
                self.snapshot.remove_node(obj.node.metadata.name)
            else:
                room = self.snapshot.set_node(obj.node)
        elif kind == "pod":
            if change.type == EventType.DELETED:
                key = pod_key(obj.pod)
                room = self.snapshot.remove_pod(key)
                self.queue.remove(key)
            else:
                room = self.snapshot.set_pod(obj.pod)
                self.queue.update(obj.pod)
        if room:
            self.queue.move_all()

    # --- deciding ---

    def _place(self, pod: pod_pb2.Pod) -> int:
        decision = self.framework.decide(pod, self.snapshot)
        if decision.node is None:
            self._not_placed(pod, decision)
            return 0
        key = pod_key(pod)
        try:
            bound = self.cluster.bind(key, decision.node, pod.metadata.resource_version)
        except Conflict:
            return 0  # changed since read: the watch brings it back
        except NotFound:
            return 0
        except StoreError as e:
            log.warning("binding %s to %s failed: %s", key, decision.node, e)
            self.queue.park(pod)
            return 0
        self.snapshot.set_pod(bound.pod)
        self._event(bound, "Scheduled",
                    f"Successfully assigned {key.namespace}/{key.name} to {decision.node}")
        return 1

    def _not_placed(self, pod: pod_pb2.Pod, decision: Decision) -> None:
        message = decision.message
        cond = next((c for c in pod.status.conditions if c.type == "PodScheduled"), None)
        if cond is None or (cond.status, cond.reason, cond.message) != (
                "False", UNSCHEDULABLE, message):
            updated = pod_pb2.Pod()
            updated.CopyFrom(pod)
            set_unschedulable(updated, message)
            try:
                pod = self.cluster.update_status(wrap(updated)).pod
            except NotFound:
                return
            except StoreError as e:
                # Conflict: the watch brings the new version; the condition
                # is written when it is decided again.
                log.debug("PodScheduled condition of %s not written: %s", pod_key(pod), e)
        self._event(wrap(pod), "FailedScheduling", message, "Warning")
        self.queue.park(pod)

    def _event(self, about: cluster_pb2.Object, reason: str, message: str,
               type: str = "Normal") -> None:
        try:
            self.cluster.event(about, reason, message, type)
        except StoreError as e:
            # Events are for people; losing one must not stop placement.
            log.warning("event %s about %s not recorded: %s", reason,
                        about.pod.metadata.name, e)


def set_unschedulable(pod: pod_pb2.Pod, message: str) -> None:
    """Sets the pod's PodScheduled condition to False/Unschedulable with
    `message`; the transition time moves only when the status does."""
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    for cond in pod.status.conditions:
        if cond.type == "PodScheduled":
            break
    else:
        cond = pod.status.conditions.add(type="PodScheduled")
    if cond.status != "False":
        cond.last_transition_time.CopyFrom(now)
    cond.status = "False"
    cond.reason = UNSCHEDULABLE
    cond.message = message
    cond.last_probe_time.CopyFrom(now)
