"""Endpoints controller: the addresses behind each Service, and its load balancer.

For each Service with a selector, an Endpoints object of the same namespace
and name (`plan_service` decides, on plain objects):

- the matching pods of the namespace that have an IP, are not being deleted
  and have not finished; ready ones (condition Ready True) in `addresses`,
  the others in `notReadyAddresses` (all ready with publishNotReadyAddresses);
- each ServicePort becomes an EndpointPort with the resolved target port; a
  named targetPort resolves through each pod's container ports (name and
  protocol), so pods may differ: addresses are grouped into subsets by the
  ports they resolve to, and a pod without the name is left out of that port;
- everything sorted, written only when it changed; the Endpoints carry the
  Service's labels and an owner reference to it (the garbage collector
  removes leftovers of a Service deleted while the scheduler was down);
- a Service deleted: its Endpoints go; a Service without a selector: its
  Endpoints are the user's and left alone.

Type LoadBalancer: status.loadBalancer.ingress is the InternalIP addresses of
the Ready nodes, sorted; other types have none.

Why no traffic would flow (`scheduler.api.service_checks.why_no_traffic`,
over the pods and the Deployments' and ReplicaSets' templates) becomes a
Warning event on the Service when a reason appears, not on every pass.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Sequence

from proto.podium.v1 import cluster_pb2, meta_pb2, node_pb2, pod_pb2, service_pb2
from scheduler.api.service_checks import selects, templates_of, why_no_traffic
from scheduler.cluster import Cluster
from scheduler.controllers.actions import Create, Delete, Emit, Plan, Update, UpdateStatus, apply
from scheduler.controllers.base import CONFLICT_RETRY, Clock, Controller
from scheduler.controllers.informer import Notice
from scheduler.controllers.pods import is_deleting, is_ready, is_terminal
from scheduler.objects import Key, key_of, scope, wrap
from scheduler.store.base import AlreadyExists

KIND = "Service"
# The reason of the Warning events that say why a Service carries no traffic.
NO_TRAFFIC = "NoTraffic"
_PortKey = tuple[tuple[str, int, str, str], ...]


# --- the decision -----------------------------------------------------------------


def resolve_port(port: service_pb2.ServicePort, pod: pod_pb2.Pod) -> int | None:
    """The pod's port for a ServicePort: the number, or the container port of
    that name and protocol; None if the pod has no port of that name."""
    target = port.target_port
    which = target.WhichOneof("value")
    if which == "str_value":
        protocol = port.protocol or "TCP"
        for container in pod.spec.containers:
            for declared in container.ports:
                if declared.name == target.str_value and (declared.protocol or "TCP") == protocol:
                    return declared.container_port
        return None
    return target.int_value if which == "int_value" else port.port


def serves(service: service_pb2.Service, pod: pod_pb2.Pod) -> bool:
    """The pod is one of the Service's endpoints, ready or not."""
    return (pod.metadata.namespace == service.metadata.namespace
            and selects(service.spec.selector, pod.metadata.labels)
            and bool(pod.status.pod_ip) and not is_deleting(pod.metadata)
            and not is_terminal(pod))


def _address(service: service_pb2.Service, pod: pod_pb2.Pod) -> service_pb2.EndpointAddress:
    address = service_pb2.EndpointAddress(ip=pod.status.pod_ip)
    if pod.spec.node_name:
        address.node_name = pod.spec.node_name
    # As Kubernetes: the pod's hostname names it only under its own subdomain.
    if pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
        address.hostname = pod.spec.hostname
    address.target_ref.CopyFrom(meta_pb2.ObjectReference(
        kind="Pod", namespace=pod.metadata.namespace, name=pod.metadata.name,
        uid=pod.metadata.uid))
    return address


def _address_order(address: service_pb2.EndpointAddress) -> tuple[int, str, str]:
    try:
        ip = int(ipaddress.ip_address(address.ip))
    except ValueError:
        ip = -1
    return ip, address.ip, address.target_ref.name


def plan_subsets(service: service_pb2.Service,
                 pods: Iterable[pod_pb2.Pod]) -> list[service_pb2.EndpointSubset]:
    """The Service's subsets: its pods grouped by the ports they resolve to."""
    groups: dict[_PortKey, tuple[list[service_pb2.EndpointAddress],
                                 list[service_pb2.EndpointAddress]]] = {}
    publish_all = service.spec.publish_not_ready_addresses
    for pod in pods:
        if not serves(service, pod):
            continue
        ports: list[tuple[str, int, str, str]] = []
        for port in service.spec.ports:
            number = resolve_port(port, pod)
            if number is not None:
                ports.append((port.name, number, port.protocol or "TCP", port.app_protocol))
        if service.spec.ports and not ports:
            continue  # none of the Service's ports reach this pod
        ready, not_ready = groups.setdefault(tuple(sorted(ports)), ([], []))
        (ready if publish_all or is_ready(pod) else not_ready).append(_address(service, pod))
    subsets = []
    for ports_key in sorted(groups):
        ready, not_ready = groups[ports_key]
        subset = service_pb2.EndpointSubset(
            addresses=sorted(ready, key=_address_order),
            not_ready_addresses=sorted(not_ready, key=_address_order))
        for name, number, protocol, app_protocol in ports_key:
            subset.ports.add(name=name, port=number, protocol=protocol,
                             app_protocol=app_protocol)
        subsets.append(subset)
    return subsets


def desired_endpoints(service: service_pb2.Service,
                      pods: Iterable[pod_pb2.Pod]) -> service_pb2.Endpoints:
    """The Endpoints object the Service should have (no server fields)."""
    endpoints = service_pb2.Endpoints(subsets=plan_subsets(service, pods))
    m = endpoints.metadata
    m.name, m.namespace = service.metadata.name, service.metadata.namespace
    m.labels.update(service.metadata.labels)
    m.owner_references.add(api_version="v1", kind=KIND, name=service.metadata.name,
                           uid=service.metadata.uid, controller=True,
                           block_owner_deletion=True)
    return endpoints


def _same(current: service_pb2.Endpoints, wanted: service_pb2.Endpoints) -> bool:
    return (list(current.subsets) == list(wanted.subsets)
            and dict(current.metadata.labels) == dict(wanted.metadata.labels)
            and list(current.metadata.owner_references)
            == list(wanted.metadata.owner_references))


def node_is_ready(node: node_pb2.Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def ingress_ips(nodes: Iterable[node_pb2.Node]) -> list[str]:
    """The InternalIP addresses of the Ready nodes, sorted (as numbers)."""
    ips = {a.address for n in nodes if node_is_ready(n) and not is_deleting(n.metadata)
           for a in n.status.addresses if a.type == "InternalIP" and a.address}
    return sorted(ips, key=lambda ip: (ipaddress.ip_address(ip).version,
                                       int(ipaddress.ip_address(ip))))


def _load_balancer(service: service_pb2.Service,
                   nodes: Iterable[node_pb2.Node]) -> service_pb2.LoadBalancerStatus:
    status = service_pb2.LoadBalancerStatus()
    if service.spec.type == "LoadBalancer":
        for ip in ingress_ips(nodes):
            status.ingress.add(ip=ip)
    return status


def plan_service(service: service_pb2.Service, pods: Sequence[pod_pb2.Pod],
                 templates: Iterable[pod_pb2.PodTemplateSpec],
                 nodes: Iterable[node_pb2.Node], current: service_pb2.Endpoints | None,
                 reported: Iterable[str] = ()) -> tuple[Plan, list[str]]:
    """What to write for one Service, and why no traffic would reach it
    (events only for reasons not in `reported`)."""
    plan = Plan()
    if is_deleting(service.metadata):
        return plan, []
    if service.spec.selector:
        wanted = desired_endpoints(service, pods)
        if current is None:
            plan.actions.append(Create(wrap(wanted)))
        elif not _same(current, wanted):
            updated = service_pb2.Endpoints()
            updated.CopyFrom(current)
            del updated.subsets[:]
            updated.subsets.extend(wanted.subsets)
            updated.metadata.labels.clear()
            updated.metadata.labels.update(wanted.metadata.labels)
            del updated.metadata.owner_references[:]
            updated.metadata.owner_references.extend(wanted.metadata.owner_references)
            plan.actions.append(Update(wrap(updated)))
    load_balancer = _load_balancer(service, nodes)
    if load_balancer != service.status.load_balancer:
        status = service_pb2.Service()
        status.CopyFrom(service)
        status.status.load_balancer.CopyFrom(load_balancer)
        plan.actions.append(UpdateStatus(wrap(status)))
    reasons = why_no_traffic(service, templates)
    seen = set(reported)
    for reason in reasons:
        if reason not in seen:
            plan.actions.append(Emit(wrap(service), NO_TRAFFIC, reason, "Warning"))
    return plan, reasons


# --- the runner -------------------------------------------------------------------


def _endpoints_key(key: Key) -> Key:
    return Key("Endpoints", key.namespace, key.name)


def _owned_by_service(endpoints: service_pb2.Endpoints, name: str) -> bool:
    return any(r.kind == KIND and r.name == name and r.controller
               for r in endpoints.metadata.owner_references)


def _node_view(obj: cluster_pb2.Object | None) -> tuple[bool, list[str]] | None:
    if obj is None:
        return None
    return node_is_ready(obj.node), ingress_ips([obj.node]) if node_is_ready(obj.node) else []


class EndpointsController(Controller):
    name = "endpoints"
    kinds = ("Service", "Pod", "Endpoints", "Node", "Deployment", "ReplicaSet")

    def __init__(self, cluster: Cluster, clock: Clock = time.monotonic,
                 wall: Clock = time.time) -> None:
        super().__init__(cluster, clock, wall)
        # What the last Warning events said per Service, so a pass that finds
        # the same reasons again stays quiet.
        self._reported: dict[Key, list[str]] = {}

    def keys_for(self, notice: Notice) -> Iterable[Key]:
        obj, old = notice.object, notice.old
        field = obj.WhichOneof("kind")
        if field == "service":
            return [key_of(obj)]
        if field == "endpoints":
            key = Key(KIND, key_of(obj).namespace, key_of(obj).name)
            return [key] if self.informer.get(key) is not None else []
        if field == "node":
            if _node_view(obj) == _node_view(old):
                return []
            return [key_of(s) for s in self.informer.objects(KIND)
                    if s.service.spec.type == "LoadBalancer"
                    or s.service.status.load_balancer.ingress]
        if field == "pod":
            label_sets = [obj.pod.metadata.labels]
            if old is not None:
                label_sets.append(old.pod.metadata.labels)
        elif field in ("deployment", "replica_set"):
            template = getattr(obj, field).spec.template
            before = getattr(old, field).spec.template if old is not None else None
            if before is not None and before == template:
                return []  # status and replica changes say nothing about Services
            label_sets = [template.metadata.labels]
            if before is not None:
                label_sets.append(before.metadata.labels)
        else:
            return []
        namespace = key_of(obj).namespace
        return [key_of(s) for s in self.informer.objects(KIND, namespace)
                if any(selects(s.service.spec.selector, labels) for labels in label_sets)]

    def resync_keys(self) -> Iterable[Key]:
        return [key_of(obj) for obj in self.informer.objects(KIND)]

    def reconcile(self, key: Key) -> float | None:
        obj = self.informer.get(key)
        current = self.informer.get(_endpoints_key(key))
        if obj is None:
            self._reported.pop(key, None)
            if current is not None and _owned_by_service(current.endpoints, key.name):
                apply(self.cluster, self.informer, [Delete(_endpoints_key(key))])
            return None
        namespace = scope(KIND, key.namespace)
        pod_objects = self.informer.objects("Pod", namespace)
        owners = [*self.informer.objects("Deployment", namespace),
                  *self.informer.objects("ReplicaSet", namespace)]
        plan, reasons = plan_service(
            obj.service, [o.pod for o in pod_objects], templates_of([*pod_objects, *owners]),
            [o.node for o in self.informer.objects("Node")],
            current.endpoints if current is not None else None,
            self._reported.get(key, ()))
        try:
            apply(self.cluster, self.informer, plan.actions)
        except AlreadyExists:
            return CONFLICT_RETRY  # created by someone else; the watch brings it
        self._reported[key] = reasons
        return plan.requeue_after
