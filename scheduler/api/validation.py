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
it finds to a `_Report`; none stops at the first error. Pod specs, shared by
pods and templates, are checked in `_pod_spec` and below.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

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
from proto.quantity import QuantityError, parse_quantity
from scheduler.api import names
from scheduler.api.selectors import SelectorError, matcher_from
from scheduler.objects import CLUSTER_SCOPED, UnknownKind, inner, kind_of, meta, scope


class FieldError(NamedTuple):
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Invalid(ValueError):
    """An object that may not be stored; str() is "<field>: <message>" per error, joined by "; "."""

    def __init__(self, field: str, message: str, errors: Sequence[FieldError] = ()) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors) or (FieldError(field, message),)
        self.field = self.errors[0].field
        self.message = self.errors[0].message
        super().__init__("; ".join(str(e) for e in self.errors))


IMMUTABLE = "field is immutable"
PROTOCOLS = ("TCP", "UDP", "SCTP")
# What the agent turns into cgroup limits or counts for placement.
RESOURCES = ("cpu", "memory", "ephemeral-storage")
ANNOTATIONS_MAX_BYTES = 256 * 1024
FIELD_REF_PATHS = frozenset({"metadata.name", "metadata.namespace", "metadata.uid",
                             "spec.nodeName", "spec.serviceAccountName", "status.podIP",
                             "status.podIPs", "status.hostIP", "status.hostIPs"})
RESOURCE_REF_NAMES = frozenset({f"{part}.{name}" for part in ("limits", "requests")
                                for name in RESOURCES})
NODE_PORT_RANGE = (30000, 32767)


class _Report:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.warnings: list[str] = []

    def error(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field, message))

    def warn(self, field: str, message: str) -> None:
        self.warnings.append(f"{field}: {message}")

    def name(self, field: str, value: str, why_not: Callable[[str], str | None]) -> None:
        why = why_not(value)
        if why is not None:
            self.error(field, why)

    def required(self, field: str, value: object) -> bool:
        if not value:
            self.error(field, "required")
        return bool(value)

    def one_of(self, field: str, value: str, allowed: Sequence[str]) -> None:
        """`value` must be "" or one of `allowed`."""
        if value and value not in allowed:
            self.error(field, f'"{value}" is not one of {", ".join(allowed)}')

    def at_least(self, field: str, value: int, low: int = 0) -> None:
        if value < low:
            self.error(field, f"{value} must be at least {low}")

    def port(self, field: str, value: int) -> None:
        if not 1 <= value <= 65535:
            self.error(field, f"{value} is not a port number (1 to 65535)")

    def port_or_name(self, field: str, value: meta_pb2.IntOrString) -> None:
        which = value.WhichOneof("value")
        if which is None:
            self.error(field, "required")
        elif which == "int_value":
            self.port(field, value.int_value)
        else:
            self.name(field, value.str_value, names.why_not_port_name)

    def ip(self, field: str, value: str, *, v4_only: bool = False) -> None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            self.error(field, f'"{value}" is not an IP address')
            return
        if v4_only and address.version != 4:
            self.error(field, f'"{value}" is not an IPv4 address')

    def cidr(self, field: str, value: str) -> None:
        try:
            ipaddress.ip_network(value)
        except ValueError as e:
            self.error(field, f'"{value}" is not a CIDR ({e})')

    def quantity(self, field: str, value: str) -> Decimal | None:
        try:
            number = parse_quantity(value)
        except QuantityError as e:
            self.error(field, str(e))
            return None
        if number < 0:
            self.error(field, f'"{value}" must not be negative')
            return None
        return number


def validate(obj: cluster_pb2.Object, old: cluster_pb2.Object | None = None) -> list[str]:
    """Warnings for `obj` (an update of `old` if given); Invalid listing every error."""
    try:
        kind = kind_of(obj)
    except UnknownKind as e:
        raise Invalid("kind", str(e)) from None
    report = _Report()
    _unknown_fields(report, inner(obj), "")
    _metadata(report, kind, meta(obj), "metadata")
    _KINDS[kind](report, inner(obj))
    if old is not None:
        _update(report, kind, obj, old)
    if report.errors:
        raise Invalid(report.errors[0].field, report.errors[0].message, report.errors)
    return report.warnings


def _unknown_fields(r: _Report, message: Message, path: str) -> None:
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


def _metadata(r: _Report, kind: str, m: meta_pb2.ObjectMeta, path: str) -> None:
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
    _labels(r, m.labels, f"{path}.labels")
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


def _labels(r: _Report, labels: Mapping[str, str], path: str) -> None:
    for key, value in labels.items():
        r.name(path, key, names.why_not_qualified_name)
        r.name(f"{path}[{key}]", value, names.why_not_label_value)


def _annotations(r: _Report, annotations: Mapping[str, str], path: str) -> None:
    size = 0
    for key, value in annotations.items():
        r.name(path, key, names.why_not_qualified_name)
        size += len(key.encode()) + len(value.encode())
    if size > ANNOTATIONS_MAX_BYTES:
        r.error(path, f"{size} bytes in all, more than {ANNOTATIONS_MAX_BYTES}")


# --- pods ----------------------------------------------------------------------------


def _pod(r: _Report, pod: pod_pb2.Pod) -> None:
    _pod_spec(r, pod.spec, "spec")


def _pod_spec(r: _Report, spec: pod_pb2.PodSpec, path: str) -> None:
    volumes = _volumes(r, spec.volumes, f"{path}.volumes")
    if not spec.containers:
        r.error(f"{path}.containers", "required: a pod needs at least one container")
    seen: set[str] = set()
    lists = (("initContainers", spec.init_containers), ("containers", spec.containers))
    for field, containers in lists:
        for i, c in enumerate(containers):
            where = f"{path}.{field}[{i}]"
            if c.name in seen:
                r.error(f"{where}.name", f'"{c.name}" is the name of another container')
            seen.add(c.name)
            _container(r, c, where, volumes, init=field == "initContainers")
            if spec.host_network:
                for j, port in enumerate(c.ports):
                    if port.host_port and port.host_port != port.container_port:
                        r.error(f"{where}.ports[{j}].hostPort",
                                "must equal containerPort when hostNetwork is true")
    _host_ports(r, spec.containers, f"{path}.containers")
    r.one_of(f"{path}.restartPolicy", spec.restart_policy, ("Always", "OnFailure", "Never"))
    r.one_of(f"{path}.dnsPolicy", spec.dns_policy,
             ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"))
    if spec.dns_policy == "None" and not spec.dns_config.nameservers:
        r.error(f"{path}.dnsConfig.nameservers", "required when dnsPolicy is None")
    for i, server in enumerate(spec.dns_config.nameservers):
        r.ip(f"{path}.dnsConfig.nameservers[{i}]", server)
    if len(spec.dns_config.nameservers) > 3:
        r.error(f"{path}.dnsConfig.nameservers", "at most 3 nameservers")
    for i, search in enumerate(spec.dns_config.searches):
        r.name(f"{path}.dnsConfig.searches[{i}]", search.rstrip("."),
               names.why_not_dns1123_subdomain)
    if spec.HasField("termination_grace_period_seconds"):
        r.at_least(f"{path}.terminationGracePeriodSeconds",
                   spec.termination_grace_period_seconds)
    _labels(r, spec.node_selector, f"{path}.nodeSelector")
    if spec.node_name:
        r.name(f"{path}.nodeName", spec.node_name, names.why_not_dns1123_subdomain)
    if spec.hostname:
        r.name(f"{path}.hostname", spec.hostname, names.why_not_dns1123_label)
    if spec.subdomain:
        r.name(f"{path}.subdomain", spec.subdomain, names.why_not_dns1123_label)
    for i, toleration in enumerate(spec.tolerations):
        _toleration(r, toleration, f"{path}.tolerations[{i}]")
    for i, alias in enumerate(spec.host_aliases):
        r.ip(f"{path}.hostAliases[{i}].ip", alias.ip)
        r.required(f"{path}.hostAliases[{i}].hostnames", alias.hostnames)
    _ids(r, spec.security_context, f"{path}.securityContext")
    if spec.security_context.HasField("fs_group"):
        r.at_least(f"{path}.securityContext.fsGroup", spec.security_context.fs_group)
    for i, group in enumerate(spec.security_context.supplemental_groups):
        r.at_least(f"{path}.securityContext.supplementalGroups[{i}]", group)


def _ids(r: _Report, context: pod_pb2.PodSecurityContext | pod_pb2.SecurityContext,
         path: str) -> None:
    if context.HasField("run_as_user"):
        r.at_least(f"{path}.runAsUser", context.run_as_user)
    if context.HasField("run_as_group"):
        r.at_least(f"{path}.runAsGroup", context.run_as_group)


def _volumes(r: _Report, volumes: Sequence[pod_pb2.Volume], path: str) -> set[str]:
    seen: set[str] = set()
    for i, volume in enumerate(volumes):
        where = f"{path}[{i}]"
        if r.required(f"{where}.name", volume.name):
            r.name(f"{where}.name", volume.name, names.why_not_dns1123_label)
        if volume.name in seen:
            r.error(f"{where}.name", f'"{volume.name}" is the name of another volume')
        seen.add(volume.name)
        source = volume.WhichOneof("source")
        if source is None:
            r.error(where, "needs exactly one source (emptyDir or hostPath)")
        elif source == "empty_dir":
            empty = volume.empty_dir
            r.one_of(f"{where}.emptyDir.medium", empty.medium, ("Memory",))
            if empty.size_limit:
                r.quantity(f"{where}.emptyDir.sizeLimit", empty.size_limit)
                if empty.medium != "Memory":
                    r.warn(f"{where}.emptyDir.sizeLimit",
                           "enforced only for medium Memory; ignored on the node's disk")
        else:
            host = volume.host_path
            if r.required(f"{where}.hostPath.path", host.path) and not host.path.startswith("/"):
                r.error(f"{where}.hostPath.path", f'"{host.path}" is not an absolute path')
            r.one_of(f"{where}.hostPath.type", host.type,
                     ("DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                      "CharDevice", "BlockDevice"))
    return seen


def _container(r: _Report, c: pod_pb2.Container, path: str, volumes: set[str],
               *, init: bool) -> None:
    if r.required(f"{path}.name", c.name):
        r.name(f"{path}.name", c.name, names.why_not_dns1123_label)
    if r.required(f"{path}.image", c.image) and c.image != c.image.strip():
        r.error(f"{path}.image", f'"{c.image}" has spaces around it')
    r.one_of(f"{path}.imagePullPolicy", c.image_pull_policy, ("Always", "IfNotPresent", "Never"))
    port_names: set[str] = set()
    for i, port in enumerate(c.ports):
        where = f"{path}.ports[{i}]"
        r.port(f"{where}.containerPort", port.container_port)
        if port.host_port:
            r.port(f"{where}.hostPort", port.host_port)
        r.one_of(f"{where}.protocol", port.protocol, PROTOCOLS)
        if port.host_ip:
            r.ip(f"{where}.hostIP", port.host_ip)
        if port.name:
            r.name(f"{where}.name", port.name, names.why_not_port_name)
            if port.name in port_names:
                r.error(f"{where}.name", f'"{port.name}" is the name of another port')
            port_names.add(port.name)
    for i, var in enumerate(c.env):
        _env_var(r, var, f"{path}.env[{i}]")
    _resources(r, c.resources, f"{path}.resources")
    mount_paths: set[str] = set()
    for i, mount in enumerate(c.volume_mounts):
        where = f"{path}.volumeMounts[{i}]"
        if r.required(f"{where}.name", mount.name) and mount.name not in volumes:
            r.error(f"{where}.name", f'"{mount.name}" is not the name of a volume in the pod')
        if r.required(f"{where}.mountPath", mount.mount_path):
            if not mount.mount_path.startswith("/"):
                r.error(f"{where}.mountPath", f'"{mount.mount_path}" is not an absolute path')
            if mount.mount_path in mount_paths:
                r.error(f"{where}.mountPath", f'"{mount.mount_path}" is mounted twice')
            mount_paths.add(mount.mount_path)
        if mount.sub_path.startswith("/") or ".." in mount.sub_path.split("/"):
            r.error(f"{where}.subPath", f'"{mount.sub_path}" must be relative, without ".."')
    for field, name in (("liveness_probe", "livenessProbe"), ("readiness_probe", "readinessProbe"),
                        ("startup_probe", "startupProbe")):
        if not c.HasField(field):  # type: ignore[arg-type]
            continue
        if init:
            r.error(f"{path}.{name}", "not allowed for init containers")
        else:
            _probe(r, getattr(c, field), f"{path}.{name}", single_success=name != "readinessProbe")
    _ids(r, c.security_context, f"{path}.securityContext")


def _env_var(r: _Report, var: pod_pb2.EnvVar, path: str) -> None:
    if r.required(f"{path}.name", var.name):
        r.name(f"{path}.name", var.name, names.why_not_env_var_name)
    source = var.value_from.WhichOneof("source") if var.HasField("value_from") else None
    if var.HasField("value_from") and source is None:
        r.error(f"{path}.valueFrom", "needs fieldRef or resourceFieldRef")
    if source is not None and var.value:
        r.error(f"{path}.valueFrom", "not allowed together with value")
    if source == "field_ref":
        field_path = var.value_from.field_ref.field_path
        if not (field_path in FIELD_REF_PATHS or field_path.startswith(
                ("metadata.labels['", "metadata.annotations['"))):
            r.error(f"{path}.valueFrom.fieldRef.fieldPath",
                    f'"{field_path}" is not one of {", ".join(sorted(FIELD_REF_PATHS))}, '
                    "metadata.labels['<key>'] or metadata.annotations['<key>']")
    elif source == "resource_field_ref":
        ref = var.value_from.resource_field_ref
        where = f"{path}.valueFrom.resourceFieldRef.resource"
        if r.required(where, ref.resource):
            r.one_of(where, ref.resource, sorted(RESOURCE_REF_NAMES))
        if ref.divisor:
            r.quantity(f"{path}.valueFrom.resourceFieldRef.divisor", ref.divisor)


def _resources(r: _Report, res: pod_pb2.ResourceRequirements, path: str) -> None:
    amounts: dict[str, dict[str, Decimal]] = {"limits": {}, "requests": {}}
    for part, values in (("limits", res.limits), ("requests", res.requests)):
        for name, text in values.items():
            where = f"{path}.{part}[{name}]"
            if name not in RESOURCES:
                r.error(where, f'"{name}" is not a resource podium knows '
                               f'({", ".join(RESOURCES)})')
                continue
            amount = r.quantity(where, text)
            if amount is None:
                continue
            amounts[part][name] = amount
            if name == "memory" and amount != amount.to_integral_value():
                r.warn(where, f'"{text}" is a fractional number of bytes; rounded up')
            if name == "ephemeral-storage" and part == "limits":
                r.warn(where, "not enforced by podium's agent")
    for name, request in amounts["requests"].items():
        limit = amounts["limits"].get(name)
        if limit is not None and request > limit:
            r.error(f"{path}.requests[{name}]", f'"{res.requests[name]}" is more than the '
                                                 f'limit "{res.limits[name]}"')


def _probe(r: _Report, probe: pod_pb2.Probe, path: str, *, single_success: bool) -> None:
    action = probe.WhichOneof("action")
    if action is None:
        r.error(path, "needs exactly one action (exec, httpGet or tcpSocket)")
    elif action == "http_get":
        r.port_or_name(f"{path}.httpGet.port", probe.http_get.port)
        r.one_of(f"{path}.httpGet.scheme", probe.http_get.scheme, ("HTTP", "HTTPS"))
    elif action == "tcp_socket":
        r.port_or_name(f"{path}.tcpSocket.port", probe.tcp_socket.port)
    elif not probe.exec.command:
        r.error(f"{path}.exec.command", "required")
    for field, value in (("initialDelaySeconds", probe.initial_delay_seconds),
                         ("timeoutSeconds", probe.timeout_seconds),
                         ("periodSeconds", probe.period_seconds),
                         ("successThreshold", probe.success_threshold),
                         ("failureThreshold", probe.failure_threshold)):
        r.at_least(f"{path}.{field}", value)
    if single_success and probe.success_threshold > 1:
        r.error(f"{path}.successThreshold", "must be 1 for liveness and startup probes")
    if probe.HasField("termination_grace_period_seconds"):
        r.at_least(f"{path}.terminationGracePeriodSeconds",
                   probe.termination_grace_period_seconds, 1)


def _host_ports(r: _Report, containers: Sequence[pod_pb2.Container], path: str) -> None:
    taken: dict[tuple[str, str, int], str] = {}
    for i, c in enumerate(containers):
        for j, port in enumerate(c.ports):
            if not port.host_port:
                continue
            key = (port.host_ip or "0.0.0.0", port.protocol or "TCP", port.host_port)
            where = f"{path}[{i}].ports[{j}].hostPort"
            if key in taken:
                r.error(where, f"{port.host_port}/{key[1]} is also {taken[key]}")
            else:
                taken[key] = where


def _toleration(r: _Report, t: pod_pb2.Toleration, path: str) -> None:
    if t.key:
        r.name(f"{path}.key", t.key, names.why_not_qualified_name)
    r.one_of(f"{path}.operator", t.operator, ("Equal", "Exists"))
    if t.operator == "Exists" and t.value:
        r.error(f"{path}.value", "must be empty when operator is Exists")
    if not t.key and t.operator != "Exists":
        r.error(f"{path}.operator", "must be Exists when key is empty")
    if t.operator != "Exists":
        r.name(f"{path}.value", t.value, names.why_not_label_value)
    r.one_of(f"{path}.effect", t.effect, ("NoSchedule", "PreferNoSchedule", "NoExecute"))
    if t.HasField("toleration_seconds") and t.effect != "NoExecute":
        r.error(f"{path}.tolerationSeconds", "allowed only with effect NoExecute")


# --- Deployments and ReplicaSets -----------------------------------------------------


def _replicated(r: _Report, replicas: int | None, min_ready: int,
                selector: meta_pb2.LabelSelector, template: pod_pb2.PodTemplateSpec) -> None:
    if replicas is not None:
        r.at_least("spec.replicas", replicas)
    r.at_least("spec.minReadySeconds", min_ready)
    _labels(r, template.metadata.labels, "spec.template.metadata.labels")
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
    _pod_spec(r, template.spec, "spec.template.spec")
    if template.spec.restart_policy not in ("", "Always"):
        r.error("spec.template.spec.restartPolicy",
                f'"{template.spec.restart_policy}" is not allowed: only Always')


def _deployment(r: _Report, deployment: apps_pb2.Deployment) -> None:
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


def _count_or_percent(r: _Report, field: str, value: meta_pb2.IntOrString) -> int | None:
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


def _replica_set(r: _Report, rs: apps_pb2.ReplicaSet) -> None:
    spec = rs.spec
    _replicated(r, spec.replicas if spec.HasField("replicas") else None,
                spec.min_ready_seconds, spec.selector, spec.template)


# --- Services and Endpoints ----------------------------------------------------------


def _service(r: _Report, service: service_pb2.Service) -> None:
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
    _labels(r, spec.selector, "spec.selector")
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
    for i, ip in enumerate(spec.external_ips):
        r.ip(f"spec.externalIPs[{i}]", ip)
    if spec.load_balancer_ip:
        r.ip("spec.loadBalancerIP", spec.load_balancer_ip)
        r.warn("spec.loadBalancerIP",
               "ignored: podium's load balancer ingress is the nodes' own addresses")


def _endpoints(r: _Report, endpoints: service_pb2.Endpoints) -> None:
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


def _node(r: _Report, node: node_pb2.Node) -> None:
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


def _namespace(r: _Report, namespace: core_pb2.Namespace) -> None:
    for i, finalizer in enumerate(namespace.spec.finalizers):
        r.name(f"spec.finalizers[{i}]", finalizer, names.why_not_qualified_name)
    r.one_of("status.phase", namespace.status.phase, ("Active", "Terminating"))


def _event(r: _Report, event: core_pb2.Event) -> None:
    involved = event.involved_object
    r.required("involvedObject.kind", involved.kind)
    r.required("involvedObject.name", involved.name)
    if (involved.namespace and involved.kind not in CLUSTER_SCOPED
            and involved.namespace != scope("Event", event.metadata.namespace)):
        r.error("involvedObject.namespace",
                f'"{involved.namespace}" is not the event\'s namespace')
    r.one_of("type", event.type, ("Normal", "Warning"))
    r.at_least("count", event.count)


_KINDS: dict[str, Callable[[_Report, Any], None]] = {
    "Pod": _pod,
    "Node": _node,
    "Namespace": _namespace,
    "Event": _event,
    "Service": _service,
    "Endpoints": _endpoints,
    "Deployment": _deployment,
    "ReplicaSet": _replica_set,
}


# --- updates -------------------------------------------------------------------------


def _update(r: _Report, kind: str, obj: cluster_pb2.Object, old: cluster_pb2.Object) -> None:
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


def _pod_update(r: _Report, spec: pod_pb2.PodSpec, old: pod_pb2.PodSpec) -> None:
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
