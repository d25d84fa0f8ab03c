"""ClusterService's agent methods: RegisterNode, Heartbeat, WatchPods, UpdatePodStatus
(and UpdatePodStatuses, several at once), RecordEvents.

An agent may change only its own Node and the status of pods bound to it
(PERMISSION_DENIED otherwise), and records Events in its own name. Leases live in
memory (controllers/leases.py): a heartbeat is not a durable write, so a thousand
nodes beating every second cost the store nothing; after a scheduler restart
every node gets a fresh grace period.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator

import grpc
from google.protobuf.duration_pb2 import Duration

from proto.podium.v1 import cluster_pb2, core_pb2, node_pb2, pod_pb2
from scheduler import objects
from scheduler.api import watching
from scheduler.api.errors import Denied, Precondition, streaming, unary
from scheduler.api.registry import Registry, pod_stopped, timestamp_now
from scheduler.api.validation import Invalid
from scheduler.controllers.leases import Leases
from scheduler.objects import Key
from scheduler.store.base import AlreadyExists, Conflict, NotFound

DEFAULT_CLUSTER_CIDR = "10.88.0.0/16"
# Statuses or Events in one UpdatePodStatuses or RecordEvents call at most: one
# store transaction holds them all, and other writers wait for it.
MAX_PER_CALL = 200
NODE_CIDR_PREFIX = 24



def _stamp_ready(status: node_pb2.NodeStatus, agent_says: bool = False) -> None:
    """Stamps the heartbeat time on the Ready condition. The agent's own
    verdict (e.g. False while its pod loop is stuck) stands when it sent
    one; otherwise a heartbeat means Ready."""
    now = timestamp_now()
    for condition in status.conditions:
        if condition.type == "Ready":
            condition.last_heartbeat_time.CopyFrom(now)
            if condition.status != "True" and not agent_says:
                condition.status, condition.reason = "True", "NodeReady"
                condition.message = "agent is posting ready status"
                condition.last_transition_time.CopyFrom(now)
            return
    status.conditions.add(type="Ready", status="True", reason="NodeReady",
                          message="agent is posting ready status",
                          last_heartbeat_time=now, last_transition_time=now)


class PodCidrs:
    """Hands each node a /24 of the cluster's pod network, never two the same."""

    def __init__(self, cluster_cidr: str = DEFAULT_CLUSTER_CIDR,
                 prefix: int = NODE_CIDR_PREFIX) -> None:
        self.network = ipaddress.ip_network(cluster_cidr)
        self.prefix = prefix

    def choose(self, used: set[str], wanted: str = "") -> str:
        taken = [ipaddress.ip_network(c) for c in used]
        if wanted:
            try:
                net = ipaddress.ip_network(wanted)
            except ValueError:
                raise Invalid("spec.podCIDR", f"{wanted!r} is not a CIDR") from None
            clash = next((t for t in taken if t.overlaps(net)), None)
            if clash is not None:
                raise Precondition(f"pod CIDR {wanted} overlaps {clash}, already a node's")
            return str(net)
        for subnet in self.network.subnets(new_prefix=self.prefix):
            if not any(t.overlaps(subnet) for t in taken):
                return str(subnet)
        raise Precondition(f"no free /{self.prefix} left in the pod network {self.network}")


class NodeMethods:
    """Mixed into the ClusterService servicer (scheduler/api/service.py)."""

    registry: Registry
    leases: Leases
    cidrs: PodCidrs
    service_cidr: str
    heartbeat_interval: float
    _register_lock: threading.Lock

    def _interval(self) -> Duration:
        interval = Duration()
        interval.FromNanoseconds(int(self.heartbeat_interval * 1e9))
        return interval

    @unary
    def RegisterNode(self, request: cluster_pb2.RegisterNodeRequest,
                     context: grpc.ServicerContext) -> cluster_pb2.RegisterNodeResponse:
        asked = request.node
        name = asked.metadata.name
        if not name:
            raise Invalid("node.metadata.name", "is required")
        with self._register_lock:  # two nodes must not pick the same CIDR
            stored = self._register(asked)
        self.leases.renew(name)
        return cluster_pb2.RegisterNodeResponse(node=stored.node,
                                                heartbeat_interval=self._interval(),
                                                cluster_cidr=str(self.cidrs.network),
                                                service_cidr=self.service_cidr)

    def _register(self, asked: node_pb2.Node) -> cluster_pb2.Object:
        name = asked.metadata.name
        key = Key("Node", "", name)
        nodes, _ = self.registry.list("Node")
        try:
            current = self.registry.get(key)
        except NotFound:
            used = {n.node.spec.pod_cidr for n in nodes if n.node.spec.pod_cidr}
            node = node_pb2.Node()
            node.CopyFrom(asked)
            node.spec.pod_cidr = self.cidrs.choose(used, asked.spec.pod_cidr)
            node.spec.ClearField("pod_cidrs")
            node.spec.pod_cidrs.append(node.spec.pod_cidr)
            node.metadata.labels.setdefault("kubernetes.io/hostname", name)
            node.metadata.labels.setdefault("kubernetes.io/os", "linux")
            _stamp_ready(node.status)
            try:
                return self.registry.create(objects.wrap(node))
            except AlreadyExists:
                current = self.registry.get(key)
        have = current.node.spec.pod_cidr
        if asked.spec.pod_cidr and have and asked.spec.pod_cidr != have:
            raise Precondition(f"node {name} already has pod CIDR {have}; "
                               f"it asked for {asked.spec.pod_cidr}")
        if not have:
            used = {n.node.spec.pod_cidr for n in nodes if n.node.spec.pod_cidr}
            current.node.spec.pod_cidr = self.cidrs.choose(used, asked.spec.pod_cidr)
            current.node.spec.pod_cidrs.append(current.node.spec.pod_cidr)
            current = self.registry.update(current)
        status = objects.wrap(current.node)
        status.node.status.CopyFrom(asked.status)
        _stamp_ready(status.node.status, agent_says=True)
        status.node.metadata.resource_version = ""
        return self.registry.update_status(status)

    @unary
    def Heartbeat(self, request: cluster_pb2.HeartbeatRequest,
                  context: grpc.ServicerContext) -> cluster_pb2.HeartbeatResponse:
        key = Key("Node", "", request.node_name)
        current = self.registry.get(key)  # NOT_FOUND tells the agent to register again
        self.leases.renew(request.node_name)
        if request.HasField("status"):
            current.node.status.CopyFrom(request.status)
            _stamp_ready(current.node.status, agent_says=True)
            current.node.metadata.resource_version = ""
            self.registry.update_status(current)
        elif not _ready(current.node):
            # Back after the lease ran out: say so now rather than at the next
            # full status.
            _stamp_ready(current.node.status)
            current.node.metadata.resource_version = ""
            self.registry.update_status(current)
        return cluster_pb2.HeartbeatResponse(heartbeat_interval=self._interval())

    @streaming
    def WatchPods(self, request: cluster_pb2.WatchPodsRequest,
                  context: grpc.ServicerContext) -> Iterator[cluster_pb2.WatchEvent]:
        node = request.node_name
        self.registry.get(Key("Node", "", node))  # NOT_FOUND: register first

        def bound_here(obj: cluster_pb2.Object) -> bool:
            return obj.pod.spec.node_name == node

        yield from watching.stream(self.registry, "Pod", "", bound_here, request.from_revision,
                                   context, bookmark_every=10.0, node=node)

    @unary
    def UpdatePodStatus(self, request: cluster_pb2.UpdatePodStatusRequest,
                        context: grpc.ServicerContext) -> pod_pb2.Pod:
        return self._update_pod_status(request)

    @unary
    def UpdatePodStatuses(self, request: cluster_pb2.UpdatePodStatusesRequest,
                          context: grpc.ServicerContext) -> cluster_pb2.UpdatePodStatusesResponse:
        """Several statuses in one transaction (a call and a disk sync for a burst of
        pod starts, rather than one of each per pod). One that may not be stored is
        answered with why; the others are stored."""
        _check_batch("statuses", len(request.statuses))
        errors = []
        with self.registry.batch():
            for one in request.statuses:
                try:
                    self._update_pod_status(one)
                    errors.append("")
                except (NotFound, Denied, Precondition, Invalid) as e:
                    errors.append(str(e))
        return cluster_pb2.UpdatePodStatusesResponse(errors=errors)

    def _update_pod_status(self, request: cluster_pb2.UpdatePodStatusRequest) -> pod_pb2.Pod:
        key = Key("Pod", objects.scope("Pod", request.namespace), request.name)
        for _ in range(10):
            current = self.registry.get(key)
            pod = current.pod
            if request.uid and pod.metadata.uid != request.uid:
                raise NotFound(f"{key} with uid {request.uid} not found (it was replaced)")
            if pod.spec.node_name != request.node_name:
                raise Denied(f"{key} is bound to {pod.spec.node_name or 'no node'}, "
                             f"not to {request.node_name}")
            status = pod_pb2.PodStatus()
            status.CopyFrom(request.status)
            # The scheduler's own condition stays as the scheduler set it.
            kept = [c for c in pod.status.conditions if c.type == "PodScheduled"]
            others = [c for c in status.conditions if c.type != "PodScheduled"]
            del status.conditions[:]
            status.conditions.extend(kept + others)
            pod.status.CopyFrom(status)
            try:
                if pod.metadata.HasField("deletion_timestamp") and pod_stopped(pod):
                    self.registry.delete(key, force=True,
                                         resource_version=pod.metadata.resource_version)
                    return pod
                return self.registry.update_status(current).pod
            except Conflict:
                continue  # another writer got in between: read again
        raise Precondition(f"{key} kept changing; try again")

    @unary
    def RecordEvents(self, request: cluster_pb2.RecordEventsRequest,
                     context: grpc.ServicerContext) -> cluster_pb2.RecordEventsResponse:
        """An agent's Events in one transaction (one call and one disk sync for a
        burst of pod starts, rather than one of each per Event). An invalid one is
        answered with why and not stored; the others are."""
        node = request.node_name
        _check_batch("events", len(request.events))
        self.registry.get(Key("Node", "", node))  # NOT_FOUND: register first
        # Checked before the transaction, which holds off every other writer.
        prepared = [self._prepare_event(node, event) for event in request.events]
        with self.registry.batch():
            errors = [p if isinstance(p, str) else self._store_event(p) for p in prepared]
        return cluster_pb2.RecordEventsResponse(errors=errors)

    def _prepare_event(self, node: str, event: core_pb2.Event) -> cluster_pb2.Object | str:
        """The Event as it would be created, or why it may not be."""
        if event.source.host != node:
            return f"source.host: {event.source.host!r} is not the calling node {node!r}"
        try:
            new, _ = self.registry.prepare_create(cluster_pb2.Object(event=event))
        except (Invalid, NotFound) as e:  # NotFound: its namespace
            return str(e)
        return new

    def _store_event(self, new: cluster_pb2.Object) -> str:
        """Creates ``new``, or raises the count and the last time of the stored Event
        of its name (a repeat); "" once stored."""
        key = objects.key_of(new)
        for _ in range(10):
            try:
                current = self.registry.get(key)
            except NotFound:
                try:
                    self.registry.store.create(new)
                    return ""
                except AlreadyExists:
                    continue  # created meanwhile: update it
            current.event.count = new.event.count
            current.event.last_timestamp.CopyFrom(new.event.last_timestamp)
            try:
                self.registry.store.update(current)
                return ""
            except (Conflict, NotFound):
                continue  # changed or gone meanwhile: read again
        return f"{key} kept changing"


def _check_batch(field: str, count: int) -> None:
    if count > MAX_PER_CALL:
        raise Invalid(field, f"{count} in one call; at most {MAX_PER_CALL}")


def _ready(node: node_pb2.Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
