"""Kubernetes' validation of podium's objects, before they are stored.

`validate(obj, old)` checks a new object (`old` None) or an update of `old`,
returns warnings (stored anyway, shown to the writer), and raises `Invalid`
listing every error found, each naming its field in Kubernetes' JSON form
(``spec.template.spec.containers[0].image``). It runs after
`defaults.apply_defaults`, but also accepts "" for a defaulted enumeration
(as the protos say: "" means the default).

    try:
        warnings = validate(obj, old)
    except Invalid as e:
        e.field, e.message          # the first error
        e.errors                    # all of them, FieldError(field, message)

The checks are small functions, one per part of an object, each adding what
it finds to a `Report` (report.py); none stops at the first error. Pod specs,
shared by pods and templates, are checked in validate_pods.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from proto.podium.v1 import (
    apps_pb2,
    cluster_pb2,
    core_pb2,
    meta_pb2,
    node_pb2,
    pod_pb2,
    service_pb2,
)
from scheduler.api import names

# The validation vocabulary, re-exported: callers import it from here.
from scheduler.api.report import ANNOTATIONS_MAX_BYTES as ANNOTATIONS_MAX_BYTES
from scheduler.api.report import IMMUTABLE as IMMUTABLE
from scheduler.api.report import NODE_PORT_RANGE as NODE_PORT_RANGE
from scheduler.api.report import PROTOCOLS as PROTOCOLS
from scheduler.api.report import RESOURCES as RESOURCES
from scheduler.api.report import FieldError as FieldError
from scheduler.api.report import Invalid as Invalid
from scheduler.api.report import Report
from scheduler.api.selectors import SelectorError, matcher_from
from scheduler.api.validate_pods import check_pod, check_pod_spec
from scheduler.objects import CLUSTER_SCOPED, UnknownKind, inner, kind_of, meta, scope


def validate(obj: cluster_pb2.Object, old: cluster_pb2.Object | None = None) -> list[str]:
    """Warnings for `obj` (an update of `old` if given); Invalid listing every error."""
    try:
        kind = kind_of(obj)
    except UnknownKind as e:
        raise Invalid("kind", str(e)) from None
    report = Report()
    _unknown_fields(report, inner(obj), "")
    _metadata(report, kind, meta(obj), "metadata")
    _KINDS[kind](report, inner(obj))
    if old is not None:
        _update(report, kind, obj, old)
    if report.errors:
        raise Invalid(report.errors[0].field, report.errors[0].message, report.errors)
    return report.warnings


def _unknown_fields(r: Report, message: Message, path: str) -> None:
    """Fields a client's newer or foreign schema sent that podium does not know:
    protobuf keeps them quietly, so they are refused here by name (number)."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = ", ".join(str(unknown[i].field_number) for i in range(len(unknown)))
        r.error(path or "object", f"unknown field number(s) {numbers}")
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        name = f"{path}.{field.json_name}" if path else field.json_name
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    _unknown_fields(r, item, f"{name}[{key}]")
        elif field.is_repeated:
            for i, item in enumerate(value):
                _unknown_fields(r, item, f"{name}[{i}]")
        else:
            _unknown_fields(r, value, name)


# --- metadata ------------------------------------------------------------------------

# Kinds whose names are DNS labels: they become DNS names of their own.
_LABEL_NAMED = frozenset({"Namespace", "Service"})


def _metadata(r: Report, kind: str, m: meta_pb2.ObjectMeta, path: str) -> None:
    why_not = (names.why_not_dns1123_label if kind in _LABEL_NAMED
               else names.why_not_dns1123_subdomain)
    if m.name:
        r.name(f"{path}.name", m.name, why_not)
    elif m.generate_name:
        r.name(f"{path}.generateName", m.generate_name, names.why_not_generate_name)
    else:
        r.error(f"{path}.name", "required (or generateName)")
    if kind in CLUSTER_SCOPED:
        if m.namespace:
            r.error(f"{path}.namespace", f"not allowed: {kind} is cluster-scoped")
    elif m.namespace:
        r.name(f"{path}.namespace", m.namespace, names.why_not_dns1123_label)
    r.labels(m.labels, f"{path}.labels")
    _annotations(r, m.annotations, f"{path}.annotations")
    controllers = 0
    for i, ref in enumerate(m.owner_references):
        where = f"{path}.ownerReferences[{i}]"
        for field, value in (("apiVersion", ref.api_version), ("kind", ref.kind),
                             ("name", ref.name), ("uid", ref.uid)):
            r.required(f"{where}.{field}", value)
        controllers += ref.controller
    if controllers > 1:
        r.error(f"{path}.ownerReferences", "only one reference may have controller true")
    for i, finalizer in enumerate(m.finalizers):
        r.name(f"{path}.finalizers[{i}]", finalizer, names.why_not_qualified_name)


def _annotations(r: Report, annotations: Mapping[str, str], path: str) -> None:
    size = 0
    for key, value in annotations.items():
        r.name(path, key, names.why_not_qualified_name)
        size += len(key.encode()) + len(value.encode())
    if size > ANNOTATIONS_MAX_BYTES:
        r.error(path, f"{size} bytes in all, more than {ANNOTATIONS_MAX_BYTES}")


# --- Deployments and ReplicaSets -----------------------------------------------------


def _replicated(r: Report, replicas: int | None, min_ready: int,
                selector: meta_pb2.LabelSelector, template: pod_pb2.PodTemplateSpec) -> None:
    if replicas is not None:
        r.at_least("spec.replicas", replicas)
    r.at_least("spec.minReadySeconds", min_ready)
    r.labels(template.metadata.labels, "spec.template.metadata.labels")
    _annotations(r, template.metadata.annotations, "spec.template.metadata.annotations")
    if not selector.match_labels and not selector.match_expressions:
        r.error("spec.selector", "required: a selector matching the template's labels")
    else:
        try:
            matcher = matcher_from(selector)
        except SelectorError as e:
            r.error("spec.selector", str(e))
        else:
            if not matcher.matches(template.metadata.labels):
                r.error("spec.template.metadata.labels",
                        f'selector does not match template labels (selector "{matcher}")')
    check_pod_spec(r, template.spec, "spec.template.spec")
    if template.spec.restart_policy not in ("", "Always"):
        r.error("spec.template.spec.restartPolicy",
                f'"{template.spec.restart_policy}" is not allowed: only Always')


def _deployment(r: Report, deployment: apps_pb2.Deployment) -> None:
    spec = deployment.spec
    _replicated(r, spec.replicas if spec.HasField("replicas") else None,
                spec.min_ready_seconds, spec.selector, spec.template)
    if spec.HasField("revision_history_limit"):
        r.at_least("spec.revisionHistoryLimit", spec.revision_history_limit)
    if spec.HasField("progress_deadline_seconds"):
        r.at_least("spec.progressDeadlineSeconds", spec.progress_deadline_seconds)
        if spec.progress_deadline_seconds <= spec.min_ready_seconds:
            r.error("spec.progressDeadlineSeconds", "must be more than minReadySeconds")
    strategy = spec.strategy
    r.one_of("spec.strategy.type", strategy.type, ("RollingUpdate", "Recreate"))
    if strategy.type == "Recreate":
        if strategy.HasField("rolling_update"):
            r.error("spec.strategy.rollingUpdate", "not allowed when type is Recreate")
        return
    rolling = strategy.rolling_update
    path = "spec.strategy.rollingUpdate"
    surge = _count_or_percent(r, f"{path}.maxSurge", rolling.max_surge)
    unavailable = _count_or_percent(r, f"{path}.maxUnavailable", rolling.max_unavailable)
    if rolling.max_unavailable.str_value.endswith("%") and unavailable is not None \
            and unavailable > 100:
        r.error(f"{path}.maxUnavailable", "must not be more than 100%")
    if surge == 0 and unavailable == 0:
        r.error(f"{path}.maxUnavailable", "may not be 0 when maxSurge is 0")


def _count_or_percent(r: Report, field: str, value: meta_pb2.IntOrString) -> int | None:
    """The number (or percentage) in `value`; None if unset or wrong."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "int_value":
        r.at_least(field, value.int_value)
        return value.int_value
    text = value.str_value
    if not (text.endswith("%") and text[:-1].isdigit() and text[:-1].isascii()):
        r.error(field, f'"{text}" is not a count or a percentage like "25%"')
        return None
    return int(text[:-1])


def _replica_set(r: Report, rs: apps_pb2.ReplicaSet) -> None:
    spec = rs.spec
    _replicated(r, spec.replicas if spec.HasField("replicas") else None,
                spec.min_ready_seconds, spec.selector, spec.template)


# --- Services and Endpoints ----------------------------------------------------------


def _service(r: Report, service: service_pb2.Service) -> None:
    spec = service.spec
    if spec.type == "ExternalName":
        r.error("spec.type", "ExternalName is not supported by podium (no externalName field)")
    else:
        r.one_of("spec.type", spec.type, ("ClusterIP", "NodePort", "LoadBalancer"))
    headless = spec.cluster_ip == "None"
    if spec.cluster_ip and not headless:
        r.ip("spec.clusterIP", spec.cluster_ip, v4_only=True)
    if spec.cluster_ips and spec.cluster_ip and spec.cluster_ips[0] != spec.cluster_ip:
        r.error("spec.clusterIPs[0]", f'"{spec.cluster_ips[0]}" is not spec.clusterIP')
    for i, ip in enumerate(spec.cluster_ips):
        if ip != "None":
            r.ip(f"spec.clusterIPs[{i}]", ip, v4_only=True)
    node_ports = spec.type in ("NodePort", "LoadBalancer")
    if headless and node_ports:
        r.error("spec.clusterIP", f'may not be "None" for type {spec.type}')
    if not spec.ports and not headless:
        r.error("spec.ports", "required (unless clusterIP is None)")
    names_seen: set[str] = set()
    taken: set[tuple[int, str]] = set()
    taken_node: set[tuple[int, str]] = set()
    for i, port in enumerate(spec.ports):
        where = f"spec.ports[{i}]"
        if port.name:
            r.name(f"{where}.name", port.name, names.why_not_dns1123_label)
        elif len(spec.ports) > 1:
            r.error(f"{where}.name", "required when the Service has more than one port")
        if port.name in names_seen:
            r.error(f"{where}.name", f'"{port.name}" is the name of another port')
        names_seen.add(port.name)
        r.port(f"{where}.port", port.port)
        r.one_of(f"{where}.protocol", port.protocol, PROTOCOLS)
        protocol = port.protocol or "TCP"
        if (port.port, protocol) in taken:
            r.error(f"{where}.port", f"{port.port}/{protocol} is also another port's")
        taken.add((port.port, protocol))
        if port.target_port.WhichOneof("value") is not None:
            r.port_or_name(f"{where}.targetPort", port.target_port)
        if port.node_port:
            low, high = NODE_PORT_RANGE
            if not node_ports:
                r.error(f"{where}.nodePort", f"not allowed for type {spec.type or 'ClusterIP'}")
            elif not low <= port.node_port <= high:
                r.error(f"{where}.nodePort", f"{port.node_port} is not in {low}-{high}")
            if (port.node_port, protocol) in taken_node:
                r.error(f"{where}.nodePort", f"{port.node_port}/{protocol} is also another port's")
            taken_node.add((port.node_port, protocol))
    r.labels(spec.selector, "spec.selector")
    r.one_of("spec.sessionAffinity", spec.session_affinity, ("None", "ClientIP"))
    if spec.HasField("session_affinity_config"):
        if spec.session_affinity != "ClientIP":
            r.error("spec.sessionAffinityConfig", "allowed only with sessionAffinity ClientIP")
        client_ip = spec.session_affinity_config.client_ip
        if client_ip.HasField("timeout_seconds") and not 0 < client_ip.timeout_seconds <= 86400:
            r.error("spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    f"{client_ip.timeout_seconds} is not in 1-86400")
    r.one_of("spec.externalTrafficPolicy", spec.external_traffic_policy, ("Cluster", "Local"))
    if spec.external_traffic_policy and not node_ports:
        r.error("spec.externalTrafficPolicy", "allowed only for types NodePort and LoadBalancer")
    elif spec.external_traffic_policy == "Local":
        r.warn("spec.externalTrafficPolicy",
               "Local is served as Cluster: every node forwards to any ready pod, and the "
               "client's address is not kept")
    for i, ip in enumerate(spec.external_ips):
        r.ip(f"spec.externalIPs[{i}]", ip)
    if spec.load_balancer_ip:
        r.ip("spec.loadBalancerIP", spec.load_balancer_ip)
        r.warn("spec.loadBalancerIP",
               "ignored: podium's load balancer ingress is the nodes' own addresses")


def _endpoints(r: Report, endpoints: service_pb2.Endpoints) -> None:
    for i, subset in enumerate(endpoints.subsets):
        path = f"subsets[{i}]"
        for field, addresses in (("addresses", subset.addresses),
                                 ("notReadyAddresses", subset.not_ready_addresses)):
            for j, address in enumerate(addresses):
                where = f"{path}.{field}[{j}]"
                r.ip(f"{where}.ip", address.ip)
                if address.hostname:
                    r.name(f"{where}.hostname", address.hostname, names.why_not_dns1123_label)
                if address.HasField("node_name"):
                    r.name(f"{where}.nodeName", address.node_name,
                           names.why_not_dns1123_subdomain)
        seen: set[str] = set()
        for j, port in enumerate(subset.ports):
            where = f"{path}.ports[{j}]"
            if port.name:
                r.name(f"{where}.name", port.name, names.why_not_dns1123_label)
            elif len(subset.ports) > 1:
                r.error(f"{where}.name", "required when the subset has more than one port")
            if port.name in seen:
                r.error(f"{where}.name", f'"{port.name}" is the name of another port')
            seen.add(port.name)
            r.port(f"{where}.port", port.port)
            r.one_of(f"{where}.protocol", port.protocol, PROTOCOLS)


# --- Nodes, Namespaces, Events ---------------------------------------------------------


def _node(r: Report, node: node_pb2.Node) -> None:
    spec = node.spec
    if spec.pod_cidr:
        r.cidr("spec.podCIDR", spec.pod_cidr)
    for i, cidr in enumerate(spec.pod_cidrs):
        r.cidr(f"spec.podCIDRs[{i}]", cidr)
    if spec.pod_cidr and spec.pod_cidrs and spec.pod_cidrs[0] != spec.pod_cidr:
        r.error("spec.podCIDRs[0]", f'"{spec.pod_cidrs[0]}" is not spec.podCIDR')
    for i, taint in enumerate(spec.taints):
        where = f"spec.taints[{i}]"
        if r.required(f"{where}.key", taint.key):
            r.name(f"{where}.key", taint.key, names.why_not_qualified_name)
        r.name(f"{where}.value", taint.value, names.why_not_label_value)
        if r.required(f"{where}.effect", taint.effect):
            r.one_of(f"{where}.effect", taint.effect,
                     ("NoSchedule", "PreferNoSchedule", "NoExecute"))
    for part, values in (("capacity", node.status.capacity),
                         ("allocatable", node.status.allocatable)):
        for name, text in values.items():
            r.quantity(f"status.{part}[{name}]", text)


def _namespace(r: Report, namespace: core_pb2.Namespace) -> None:
    for i, finalizer in enumerate(namespace.spec.finalizers):
        r.name(f"spec.finalizers[{i}]", finalizer, names.why_not_qualified_name)
    r.one_of("status.phase", namespace.status.phase, ("Active", "Terminating"))


def _event(r: Report, event: core_pb2.Event) -> None:
    involved = event.involved_object
    r.required("involvedObject.kind", involved.kind)
    r.required("involvedObject.name", involved.name)
    if (involved.namespace and involved.kind not in CLUSTER_SCOPED
            and involved.namespace != scope("Event", event.metadata.namespace)):
        r.error("involvedObject.namespace",
                f'"{involved.namespace}" is not the event\'s namespace')
    r.one_of("type", event.type, ("Normal", "Warning"))
    r.at_least("count", event.count)


_KINDS: dict[str, Callable[[Report, Any], None]] = {
    "Pod": check_pod,
    "Node": _node,
    "Namespace": _namespace,
    "Event": _event,
    "Service": _service,
    "Endpoints": _endpoints,
    "Deployment": _deployment,
    "ReplicaSet": _replica_set,
}


# --- updates -------------------------------------------------------------------------


def _update(r: Report, kind: str, obj: cluster_pb2.Object, old: cluster_pb2.Object) -> None:
    try:
        old_kind = kind_of(old)
    except UnknownKind:
        old_kind = ""
    if old_kind != kind:
        r.error("kind", f"{IMMUTABLE} (was {old_kind or 'nothing'})")
        return
    m, was = meta(obj), meta(old)
    if m.name != was.name:
        r.error("metadata.name", f'{IMMUTABLE} (was "{was.name}")')
    if scope(kind, m.namespace) != scope(kind, was.namespace):
        r.error("metadata.namespace", f'{IMMUTABLE} (was "{was.namespace}")')
    if m.uid and was.uid and m.uid != was.uid:
        r.error("metadata.uid", f'{IMMUTABLE} (was "{was.uid}")')
    if kind == "Pod":
        _pod_update(r, obj.pod.spec, old.pod.spec)
    elif kind in ("Deployment", "ReplicaSet"):
        new_selector = getattr(obj, "deployment" if kind == "Deployment" else "replica_set")
        old_selector = getattr(old, "deployment" if kind == "Deployment" else "replica_set")
        if new_selector.spec.selector != old_selector.spec.selector:
            r.error("spec.selector", IMMUTABLE)
    elif kind == "Service":
        # Unset on an update is a change too: `defaults.carry_over` keeps the old one.
        ip, old_ip = obj.service.spec.cluster_ip, old.service.spec.cluster_ip
        if old_ip and ip != old_ip:
            r.error("spec.clusterIP", f'{IMMUTABLE} (was "{old_ip}")')
    elif kind == "Node":
        cidr, old_cidr = obj.node.spec.pod_cidr, old.node.spec.pod_cidr
        if old_cidr and cidr != old_cidr:
            r.error("spec.podCIDR", f'{IMMUTABLE} once set (was "{old_cidr}")')


def _pod_update(r: Report, spec: pod_pb2.PodSpec, old: pod_pb2.PodSpec) -> None:
    """A pod's spec may change only in its images, added tolerations, and its node once.

    An update that leaves the node unset is a change: `defaults.carry_over`
    keeps the old node for writers that send the spec as first written.
    """
    for toleration in old.tolerations:
        if toleration not in spec.tolerations:
            r.error("spec.tolerations", "tolerations may be added, not changed or removed")
            break
    if old.node_name and spec.node_name != old.node_name:
        r.error("spec.nodeName", f'{IMMUTABLE} once set (was "{old.node_name}")')
    a, b = pod_pb2.PodSpec(), pod_pb2.PodSpec()
    a.CopyFrom(spec)
    b.CopyFrom(old)
    for s in (a, b):
        for c in (*s.init_containers, *s.containers):
            # The pull policy goes with the image: its default follows the tag.
            c.image, c.image_pull_policy = "", ""
        del s.tolerations[:]
        s.node_name = ""
    if a != b:
        where = _first_difference(a, b, "spec") or "spec"
        r.error("spec", f"{IMMUTABLE}: {where} changed; a pod may change only its containers' "
                        "images and add tolerations")


def _first_difference(a: Message, b: Message, path: str) -> str | None:
    """The JSON path of the first field that differs between two messages of one type."""
    for field in a.DESCRIPTOR.fields:
        va, vb = getattr(a, field.name), getattr(b, field.name)
        if va == vb:
            continue
        where = f"{path}.{field.json_name}"
        message = field.message_type
        is_map = message is not None and message.GetOptions().map_entry
        if message is not None and not is_map:
            if field.is_repeated:
                if len(va) != len(vb):
                    return where
                for i, (x, y) in enumerate(zip(va, vb, strict=True)):
                    if x != y:
                        return _first_difference(x, y, f"{where}[{i}]") or f"{where}[{i}]"
                return where
            return _first_difference(va, vb, where) or where
        return where
    return None
