"""Kubernetes' defaults, filled into an object before it is validated and stored.

`apply_defaults(obj)` changes `obj` in place and only fills what is unset, so
applying it twice changes nothing. Pod templates inside Deployments and
ReplicaSets get the same PodSpec defaults as pods, except what Kubernetes
fills only for pods (requests taken from limits).

A Deployment or ReplicaSet without a selector keeps none here: apps/v1
requires one, and `proto.kube` already gives the old API versions
(extensions/v1beta1, apps/v1beta1) their template's labels when converting
a manifest.

`carry_over(obj, old)` keeps, on an update, what the server assigned and the
writer (e.g. `podium apply` of the original manifest) left out: a Service's
cluster IP and node ports, a pod's node, a node's pod CIDR.
"""

from __future__ import annotations

from proto.podium.v1 import apps_pb2, cluster_pb2, node_pb2, pod_pb2, service_pb2
from scheduler.objects import CLUSTER_SCOPED, DEFAULT_NAMESPACE, kind_of, meta

TERMINATION_GRACE_PERIOD_SECONDS = 30
PROBE_TIMEOUT_SECONDS = 1
PROBE_PERIOD_SECONDS = 10
PROBE_SUCCESS_THRESHOLD = 1
PROBE_FAILURE_THRESHOLD = 3
MAX_SURGE = "25%"
MAX_UNAVAILABLE = "25%"
REVISION_HISTORY_LIMIT = 10
PROGRESS_DEADLINE_SECONDS = 600
SESSION_AFFINITY_TIMEOUT_SECONDS = 10800


def apply_defaults(obj: cluster_pb2.Object) -> None:
    """Fill `obj`'s unset fields as Kubernetes' API server would."""
    kind = kind_of(obj)
    m = meta(obj)
    if kind in CLUSTER_SCOPED:
        # As the API server does: a cluster-scoped object has no namespace.
        m.namespace = ""
    elif not m.namespace:
        m.namespace = DEFAULT_NAMESPACE
    if kind == "Pod":
        default_pod_spec(obj.pod.spec, template=False)
    elif kind == "Deployment":
        _deployment(obj.deployment.spec)
    elif kind == "ReplicaSet":
        spec = obj.replica_set.spec
        if not spec.HasField("replicas"):
            spec.replicas = 1
        default_pod_spec(spec.template.spec, template=True)
    elif kind == "Service":
        _service(obj.service.spec)
    elif kind == "Endpoints":
        for subset in obj.endpoints.subsets:
            for endpoint_port in subset.ports:
                endpoint_port.protocol = endpoint_port.protocol or "TCP"
    elif kind == "Namespace":
        status = obj.namespace.status
        status.phase = status.phase or "Active"


def default_pod_spec(spec: pod_pb2.PodSpec, *, template: bool) -> None:
    """A pod's or a pod template's spec; `template` leaves out pod-only defaults."""
    spec.restart_policy = spec.restart_policy or "Always"
    spec.dns_policy = spec.dns_policy or "ClusterFirst"
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = TERMINATION_GRACE_PERIOD_SECONDS
    for container in (*spec.init_containers, *spec.containers):
        _container(container, host_network=spec.host_network, template=template)


def image_pull_policy(image: str) -> str:
    """Always for ":latest" or no tag, IfNotPresent otherwise (a digest counts as a tag)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _container(container: pod_pb2.Container, *, host_network: bool, template: bool) -> None:
    if not container.image_pull_policy and container.image:
        container.image_pull_policy = image_pull_policy(container.image)
    for port in container.ports:
        port.protocol = port.protocol or "TCP"
        # With the node's network the container's port is the node's port.
        if host_network and not port.host_port:
            port.host_port = port.container_port
    for var in container.env:
        if var.value_from.HasField("field_ref"):
            ref = var.value_from.field_ref
            ref.api_version = ref.api_version or "v1"
    for probe_name in ("liveness_probe", "readiness_probe", "startup_probe"):
        if container.HasField(probe_name):
            _probe(getattr(container, probe_name))
    if not template:
        # As Kubernetes does for pods: a limit without a request is also the request.
        resources = container.resources
        for name, limit in resources.limits.items():
            if name not in resources.requests:
                resources.requests[name] = limit


def _probe(probe: pod_pb2.Probe) -> None:
    probe.timeout_seconds = probe.timeout_seconds or PROBE_TIMEOUT_SECONDS
    probe.period_seconds = probe.period_seconds or PROBE_PERIOD_SECONDS
    probe.success_threshold = probe.success_threshold or PROBE_SUCCESS_THRESHOLD
    probe.failure_threshold = probe.failure_threshold or PROBE_FAILURE_THRESHOLD
    if probe.HasField("http_get"):
        probe.http_get.path = probe.http_get.path or "/"
        probe.http_get.scheme = probe.http_get.scheme or "HTTP"


def _deployment(spec: apps_pb2.DeploymentSpec) -> None:
    if not spec.HasField("replicas"):
        spec.replicas = 1
    strategy = spec.strategy
    strategy.type = strategy.type or "RollingUpdate"
    if strategy.type == "RollingUpdate":
        rolling = strategy.rolling_update
        if rolling.max_surge.WhichOneof("value") is None:
            rolling.max_surge.str_value = MAX_SURGE
        if rolling.max_unavailable.WhichOneof("value") is None:
            rolling.max_unavailable.str_value = MAX_UNAVAILABLE
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = REVISION_HISTORY_LIMIT
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = PROGRESS_DEADLINE_SECONDS
    default_pod_spec(spec.template.spec, template=True)


def _service(spec: service_pb2.ServiceSpec) -> None:
    spec.type = spec.type or "ClusterIP"
    spec.session_affinity = spec.session_affinity or "None"
    if spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        if not client_ip.HasField("timeout_seconds"):
            client_ip.timeout_seconds = SESSION_AFFINITY_TIMEOUT_SECONDS
    if spec.type in ("NodePort", "LoadBalancer"):
        spec.external_traffic_policy = spec.external_traffic_policy or "Cluster"
    for port in spec.ports:
        port.protocol = port.protocol or "TCP"
        if port.target_port.WhichOneof("value") is None:
            port.target_port.int_value = port.port


def carry_over(obj: cluster_pb2.Object, old: cluster_pb2.Object) -> None:
    """Copy from `old` what the server assigned and `obj`, an update of it, leaves unset.

    Call before `apply_defaults` and validation, so that re-applying a
    manifest is not a change of an immutable field.
    """
    kind = kind_of(obj)
    if kind != kind_of(old):
        return
    if kind == "Service":
        _service_carry_over(obj.service.spec, old.service.spec)
    elif kind == "Pod":
        if not obj.pod.spec.node_name:
            obj.pod.spec.node_name = old.pod.spec.node_name
    elif kind == "Node":
        _node_carry_over(obj.node.spec, old.node.spec)


def _service_carry_over(spec: service_pb2.ServiceSpec, old: service_pb2.ServiceSpec) -> None:
    if not spec.cluster_ip and not spec.cluster_ips:
        spec.cluster_ip = old.cluster_ip
        spec.cluster_ips[:] = old.cluster_ips
    if spec.type not in ("NodePort", "LoadBalancer"):
        return
    # A node port stays with the port (number and protocol) it was allocated for.
    allocated = {(p.port, p.protocol or "TCP"): p.node_port for p in old.ports if p.node_port}
    for port in spec.ports:
        if not port.node_port:
            port.node_port = allocated.get((port.port, port.protocol or "TCP"), 0)


def _node_carry_over(spec: node_pb2.NodeSpec, old: node_pb2.NodeSpec) -> None:
    if not spec.pod_cidr and not spec.pod_cidrs:
        spec.pod_cidr = old.pod_cidr
        spec.pod_cidrs[:] = old.pod_cidrs
