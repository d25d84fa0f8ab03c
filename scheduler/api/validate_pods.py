"""Validation of pod specs, shared by pods and the templates of Deployments and
ReplicaSets: containers, volumes, resources, probes, host ports, tolerations."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from proto.podium.v1 import pod_pb2
from scheduler.api import names
from scheduler.api.report import (
    FIELD_REF_PATHS,
    PROTOCOLS,
    RESOURCE_REF_NAMES,
    RESOURCES,
    Report,
)

# --- pods ----------------------------------------------------------------------------


def check_pod(r: Report, pod: pod_pb2.Pod) -> None:
    check_pod_spec(r, pod.spec, "spec")


def check_pod_spec(r: Report, spec: pod_pb2.PodSpec, path: str) -> None:
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
    r.labels(spec.node_selector, f"{path}.nodeSelector")
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


def _ids(r: Report, context: pod_pb2.PodSecurityContext | pod_pb2.SecurityContext,
         path: str) -> None:
    if context.HasField("run_as_user"):
        r.at_least(f"{path}.runAsUser", context.run_as_user)
    if context.HasField("run_as_group"):
        r.at_least(f"{path}.runAsGroup", context.run_as_group)


def _volumes(r: Report, volumes: Sequence[pod_pb2.Volume], path: str) -> set[str]:
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


def _container(r: Report, c: pod_pb2.Container, path: str, volumes: set[str],
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


def _env_var(r: Report, var: pod_pb2.EnvVar, path: str) -> None:
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


def _resources(r: Report, res: pod_pb2.ResourceRequirements, path: str) -> None:
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


def _probe(r: Report, probe: pod_pb2.Probe, path: str, *, single_success: bool) -> None:
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


def _host_ports(r: Report, containers: Sequence[pod_pb2.Container], path: str) -> None:
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


def _toleration(r: Report, t: pod_pb2.Toleration, path: str) -> None:
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
