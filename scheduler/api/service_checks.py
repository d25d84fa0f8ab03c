"""Why a Service would carry no traffic, in plain sentences.

Kubernetes stores such a Service without a word; podium says why, in the
warnings of Create/Update/Apply and in Warning events of the Endpoints
controller, from one pure function:

    why_no_traffic(service, templates) -> list[str]

`templates` are the pod templates that could serve it: the namespace's pods
(as templates, `templates_of`) and the templates of its Deployments and
ReplicaSets, whose pods may not exist yet. It finds:

- a selector that matches none of them;
- a numeric targetPort that no selected container declares (traffic goes to
  the pods anyway; it is refused unless something listens there);
- a named targetPort that no selected container has (the port gets no
  endpoints at all).

A Service without a selector (its Endpoints are kept by hand) gets none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from proto.podium.v1 import cluster_pb2, pod_pb2, service_pb2
from scheduler.objects import DEFAULT_NAMESPACE

_TERMINAL = ("Succeeded", "Failed")
# The kinds whose pods (or future pods) could serve a Service.
TEMPLATE_KINDS = ("Pod", "Deployment", "ReplicaSet")

Lister = Callable[[str, str], tuple[list[cluster_pb2.Object], int]]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service's selector (all pairs must be there); an empty one selects nothing."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def templates_of(objects: Iterable[cluster_pb2.Object]) -> list[pod_pb2.PodTemplateSpec]:
    """Pod templates of live pods, Deployments and ReplicaSets among `objects`."""
    out: list[pod_pb2.PodTemplateSpec] = []
    for obj in objects:
        field = obj.WhichOneof("kind")
        if field == "pod":
            pod = obj.pod
            if pod.metadata.HasField("deletion_timestamp") or pod.status.phase in _TERMINAL:
                continue
            template = pod_pb2.PodTemplateSpec(spec=pod.spec)
            template.metadata.labels.update(pod.metadata.labels)
            out.append(template)
        elif field in ("deployment", "replica_set"):
            owner = getattr(obj, field)
            if not owner.metadata.HasField("deletion_timestamp"):
                out.append(owner.spec.template)
    return out


def namespace_templates(list_kind: Lister, namespace: str) -> list[pod_pb2.PodTemplateSpec]:
    """`templates_of` every pod, Deployment and ReplicaSet of `namespace`."""
    objects: list[cluster_pb2.Object] = []
    for kind in TEMPLATE_KINDS:
        objects.extend(list_kind(kind, namespace)[0])
    return templates_of(objects)


def _declared(templates: Iterable[pod_pb2.PodTemplateSpec]) -> list[pod_pb2.ContainerPort]:
    return [port for t in templates for c in t.spec.containers for port in c.ports]


def _listing(ports: Iterable[pod_pb2.ContainerPort]) -> str:
    found = sorted({(p.container_port, p.protocol or "TCP") for p in ports})
    return ", ".join(f"{n}/{proto}" for n, proto in found) or "no ports"


def why_no_traffic(service: service_pb2.Service,
                   templates: Iterable[pod_pb2.PodTemplateSpec]) -> list[str]:
    """One sentence per reason the Service's traffic has nowhere to go."""
    spec = service.spec
    if not spec.selector:
        return []
    namespace = service.metadata.namespace or DEFAULT_NAMESPACE
    selected = [t for t in templates if selects(spec.selector, t.metadata.labels)]
    if not selected:
        return [f"selector {selector_text(spec.selector)} matches no pods in namespace "
                f"{namespace}"]
    declared = _declared(selected)
    they = _listing(declared)
    out: list[str] = []
    for port in spec.ports:
        protocol = port.protocol or "TCP"
        what = f"port {port.port}/{protocol}"
        target = port.target_port
        if target.WhichOneof("value") == "str_value":
            name = target.str_value
            if not any(p.name == name and (p.protocol or "TCP") == protocol
                       for p in declared):
                out.append(f"{what}: no selected container has a {protocol} port named "
                           f"{name} (they declare {they}); the port gets no endpoints")
            continue
        number = target.int_value if target.WhichOneof("value") else port.port
        if not any(p.container_port == number and (p.protocol or "TCP") == protocol
                   for p in declared):
            out.append(f"{what}: no selected container declares port {number} (they "
                       f"declare {they}); connections will be refused unless something "
                       "listens there")
    return out
