"""Node lifecycle: nodes that stop heart-beating become NotReady, then lose
their pods.

Every `interval` seconds, and the moment a node's silence (seconds since its
lease was renewed; see leases.py) passes one of the limits below
(`next_crossing`), `plan_nodes` looks at each node's silence:

- silent longer than node_grace: every condition, Ready included, becomes
  "Unknown" (reason NodeStatusUnknown), event NodeNotReady;
- silent longer than node_grace + eviction_timeout: its pods are evicted
  (event Evicted). Pods a controller owns are force-deleted, and their
  ReplicaSet replaces them elsewhere; a bare pod with restartPolicy Always
  is force-deleted and created again (same name, new uid, unbound, no
  status), so placement finds it a new node; any other bare pod is marked
  Failed (reason NodeLost), then force-deleted;
- heard again while its Ready condition is still the Unknown this
  controller wrote: Ready goes back to True (NodeReady). A heartbeat that
  carries status replaces the conditions itself; this controller never
  overwrites those, and its writes compare-and-swap, so it cannot undo a
  newer heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from proto.podium.v1 import node_pb2, pod_pb2
from scheduler.cluster import Cluster
from scheduler.controllers.actions import Action, Create, Delete, Emit, UpdateStatus, apply
from scheduler.controllers.base import Controller
from scheduler.controllers.informer import Notice
from scheduler.controllers.leases import Leases
from scheduler.controllers.pods import controller_ref, is_deleting, is_terminal, timestamp
from scheduler.objects import Key, key_of, wrap
from scheduler.store.base import EventType

UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "agent stopped posting node status."
READY_MESSAGE = "agent is posting ready status"
# The key the controller's periodic pass is queued under.
TICK = Key("Node", "", "")
# How far past a limit the pass comes (the limits are "longer than").
PAST = 0.001


def _ready(node: node_pb2.Node) -> node_pb2.NodeCondition | None:
    return next((c for c in node.status.conditions if c.type == "Ready"), None)


def _mark_unknown(node: node_pb2.Node, now: float) -> node_pb2.Node:
    out = node_pb2.Node()
    out.CopyFrom(node)
    if _ready(out) is None:
        out.status.conditions.append(node_pb2.NodeCondition(type="Ready"))
    for cond in out.status.conditions:
        if cond.status != "Unknown":
            cond.last_transition_time.CopyFrom(timestamp(now))
        cond.status = "Unknown"
        cond.reason = UNKNOWN_REASON
        cond.message = UNKNOWN_MESSAGE
    return out


def _mark_ready(node: node_pb2.Node, now: float) -> node_pb2.Node:
    out = node_pb2.Node()
    out.CopyFrom(node)
    cond = _ready(out)
    assert cond is not None
    cond.status = "True"
    cond.reason = "NodeReady"
    cond.message = READY_MESSAGE
    cond.last_transition_time.CopyFrom(timestamp(now))
    cond.last_heartbeat_time.CopyFrom(timestamp(now))
    return out


def recreated(pod: pod_pb2.Pod) -> pod_pb2.Pod:
    """A bare pod to create again elsewhere: same name and spec, unbound,
    without status or server-set metadata."""
    out = pod_pb2.Pod()
    m = pod.metadata
    out.metadata.name = m.name
    out.metadata.generate_name = m.generate_name
    out.metadata.namespace = m.namespace
    out.metadata.labels.update(m.labels)
    out.metadata.annotations.update(m.annotations)
    out.metadata.finalizers.extend(m.finalizers)
    out.spec.CopyFrom(pod.spec)
    out.spec.node_name = ""
    return out


def _evict(node_name: str, pod: pod_pb2.Pod) -> list[Action]:
    why = f"Node {node_name} stopped posting status: evicting pod {pod.metadata.name}"
    key = key_of(wrap(pod))
    if controller_ref(pod.metadata) is not None or is_deleting(pod.metadata):
        # Its controller replaces it; or someone already asked it to go, and
        # the silent agent will never confirm.
        return [Emit(wrap(pod), "Evicted", why, "Warning"), Delete(key, force=True)]
    if is_terminal(pod):
        return []  # finished: nothing to move, and its record is worth keeping
    if pod.spec.restart_policy in ("", "Always"):
        return [Emit(wrap(pod), "Evicted", why + " (to be created again)", "Warning"),
                Delete(key, force=True), Create(wrap(recreated(pod)))]
    failed = pod_pb2.Pod()
    failed.CopyFrom(pod)
    failed.status.phase = "Failed"
    failed.status.reason = "NodeLost"
    failed.status.message = (f"Node {node_name} which was running pod "
                             f"{pod.metadata.name} is unresponsive")
    return [UpdateStatus(wrap(failed)),
            Emit(wrap(pod), "NodeLost", failed.status.message, "Warning"),
            Delete(key, force=True)]


def plan_nodes(nodes: Sequence[node_pb2.Node], pods: Sequence[pod_pb2.Pod],
               silence: Mapping[str, float], node_grace: float, eviction_timeout: float,
               now: float) -> list[Action]:
    """What to do about nodes given how long each has been silent (seconds;
    a node missing from `silence` counts as just heard). `now` is wall time."""
    actions: list[Action] = []
    for node in nodes:
        name = node.metadata.name
        quiet = silence.get(name, 0.0)
        ready = _ready(node)
        if quiet > node_grace:
            if ready is None or ready.status != "Unknown":
                actions.append(UpdateStatus(wrap(_mark_unknown(node, now))))
                actions.append(Emit(wrap(node), "NodeNotReady",
                                    f"Node {name} status is now: NodeNotReady"))
            if quiet > node_grace + eviction_timeout:
                for pod in pods:
                    if pod.spec.node_name == name:
                        actions.extend(_evict(name, pod))
        elif ready is not None and ready.status == "Unknown" and ready.reason == UNKNOWN_REASON:
            actions.append(UpdateStatus(wrap(_mark_ready(node, now))))
            actions.append(Emit(wrap(node), "NodeReady", f"Node {name} status is now: NodeReady"))
    return actions


def next_crossing(silence: Mapping[str, float], limits: Sequence[float]) -> float | None:
    """Seconds until the first node's silence passes one of ``limits``; None if every
    node is past them all. A node that heartbeats meanwhile only makes the pass early."""
    waits = [limit - quiet for quiet in silence.values() for limit in limits if limit >= quiet]
    return min(waits) if waits else None


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    kinds = ("Node", "Pod")

    def __init__(self, cluster: Cluster, leases: Leases, node_grace: float = 5.0,
                 eviction_timeout: float = 5.0, interval: float = 0.2,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(cluster, leases.clock, wall)
        self.leases = leases
        self.node_grace = node_grace
        self.eviction_timeout = eviction_timeout
        self.interval = interval
        self.queue.add(TICK)

    def keys_for(self, notice: Notice) -> Iterable[Key]:
        if notice.type == EventType.DELETED and notice.object.WhichOneof("kind") == "node":
            self.leases.forget(notice.object.node.metadata.name)
        return ()

    def resync_keys(self) -> Iterable[Key]:
        return (TICK,)

    def reconcile(self, key: Key) -> float | None:
        nodes = [o.node for o in self.informer.objects("Node")]
        pods = [o.pod for o in self.informer.objects("Pod")]
        silence = {n.metadata.name: self.leases.silence(n.metadata.name) for n in nodes}
        actions = plan_nodes(nodes, pods, silence, self.node_grace, self.eviction_timeout,
                             self.wall())
        # Look again next interval, or just after a limit is passed: a dead node's pods
        # go at grace + timeout from its last heartbeat, not up to an interval later.
        crossing = next_crossing(silence, (self.node_grace,
                                           self.node_grace + self.eviction_timeout))
        again = self.interval if crossing is None else min(self.interval, crossing + PAST)
        try:
            apply(self.cluster, self.informer, actions)
        finally:
            # Whatever happened.
            self.queue.add(TICK, again)
        return again
