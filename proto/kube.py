"""Kubernetes manifests as users write them <-> podium's protobuf objects.

Most of a manifest maps onto the messages of ``proto.podium.v1`` through
protobuf's JSON mapping as it is. This module handles the rest, in one place:

- the ``apiVersion``/``kind`` envelope (checked, stripped, and turned into the
  oneof field of ``cluster_pb2.Object``), ``List`` kinds, several documents;
- int-or-string fields (ports, maxSurge): a bare ``8080`` or ``"http"`` becomes
  the ``IntOrString`` message, found by walking the message descriptors;
- quantities (``500m``, ``128Mi``, ``1``) stay strings, even when YAML read a
  number;
- what the old API versions defaulted (an ``extensions/v1beta1`` Deployment
  without ``selector`` selects its template's labels);
- errors that name the file, the document, the field path and the line (the
  files are read by ``proto.documents``, which keeps each field's line);
  fields Kubernetes has and podium ignores become warnings.

    docs = load_documents(text, "app.yaml")        # ManifestError on bad YAML
    for doc in docs:
        converted = to_object(doc)                 # ManifestError on a bad field
        converted.object, converted.message, converted.warnings
    to_manifest(converted.object)                  # back to a Kubernetes dict

The walk below validates every field's JSON type itself (rather than leaving
it to ``ParseDict``) because ``ParseDict``'s errors lose list indices, and the
path with indices is what finds the line.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from proto.documents import (
    Document,
    ManifestError,
    Path,
    error,
    json_type,
    load_documents,
    located,
)
from proto.podium.v1 import cluster_pb2, meta_pb2
from proto.quantity import QuantityError, parse_quantity

__all__ = [
    "API_VERSIONS",
    "Converted",
    "Document",
    "ManifestError",
    "load_documents",
    "load_objects",
    "to_manifest",
    "to_object",
]


class Converted(NamedTuple):
    object: cluster_pb2.Object
    kind: str
    api_version: str  # as the manifest wrote it
    warnings: tuple[str, ...]

    @property
    def message(self) -> Message:
        """The typed object inside the envelope (a ``pod_pb2.Pod`` for a Pod)."""
        field = self.object.WhichOneof("kind")
        assert field is not None
        result: Message = getattr(self.object, field)
        return result


# --- kinds and API versions ------------------------------------------------


def _kind_fields() -> dict[str, tuple[FieldDescriptor, Descriptor]]:
    out = {}
    for field in cluster_pb2.Object.DESCRIPTOR.oneofs_by_name["kind"].fields:
        message = field.message_type
        assert message is not None
        out[message.name] = (field, message)
    return out


# Kind name -> its oneof field in cluster_pb2.Object and its message.
_KIND_FIELDS = _kind_fields()
_CORE = ("Pod", "Service", "Namespace", "Endpoints", "Node", "Event")
_APPS = ("Deployment", "ReplicaSet")

# apiVersion -> the kinds podium accepts under it.
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "v1": _CORE,
    "apps/v1": _APPS,
    "apps/v1beta1": _APPS,
    "apps/v1beta2": _APPS,
    "extensions/v1beta1": _APPS,
}
# The apiVersion to_manifest writes for each kind.
_PREFERRED = {**{k: "v1" for k in _CORE}, **{k: "apps/v1" for k in _APPS}}
# Versions whose Deployments/ReplicaSets defaulted spec.selector to the
# template's labels (apps/v1beta2 and apps/v1 require it).
_SELECTOR_FROM_TEMPLATE = ("extensions/v1beta1", "apps/v1beta1")

# --- fields that need more than the JSON mapping -----------------------------

_INT_OR_STRING = meta_pb2.IntOrString.DESCRIPTOR.full_name
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
# Quantity fields: numbers in them become strings, and their syntax is checked.
_QUANTITY_FIELDS = frozenset(
    {
        "podium.v1.ResourceRequirements.limits",
        "podium.v1.ResourceRequirements.requests",
        "podium.v1.NodeStatus.capacity",
        "podium.v1.NodeStatus.allocatable",
        "podium.v1.EmptyDirVolumeSource.size_limit",
        "podium.v1.ResourceFieldSelector.divisor",
    }
)



def _is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except QuantityError:
        return False
    return True


# Kubernetes fields podium accepts but does nothing with: dropped with a
# warning. The agent and scheduler issues define what podium supports; these
# are the common Kubernetes fields outside it.
_IGNORED: dict[str, frozenset[str]] = {
    "podium.v1.ObjectMeta": frozenset({"selfLink", "managedFields", "clusterName"}),
    "podium.v1.PodSpec": frozenset(
        {
            "imagePullSecrets",
            "serviceAccountName",
            "serviceAccount",
            "automountServiceAccountToken",
            "affinity",
            "topologySpreadConstraints",
            "priorityClassName",
            "priority",
            "preemptionPolicy",
            "schedulerName",
            "enableServiceLinks",
            "shareProcessNamespace",
            "activeDeadlineSeconds",
            "runtimeClassName",
            "readinessGates",
            "overhead",
            "setHostnameAsFQDN",
            "os",
            "hostUsers",
            "schedulingGates",
            "resourceClaims",
        }
    ),
    "podium.v1.Container": frozenset(
        {
            "lifecycle",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "resizePolicy",
            "volumeDevices",
        }
    ),
    "podium.v1.ResourceRequirements": frozenset({"claims"}),
    "podium.v1.VolumeMount": frozenset({"mountPropagation", "recursiveReadOnly"}),
    "podium.v1.SecurityContext": frozenset(
        {"seLinuxOptions", "seccompProfile", "appArmorProfile", "procMount", "windowsOptions"}
    ),
    "podium.v1.PodSecurityContext": frozenset(
        {
            "seLinuxOptions",
            "seccompProfile",
            "appArmorProfile",
            "sysctls",
            "fsGroupChangePolicy",
            "windowsOptions",
            "supplementalGroupsPolicy",
        }
    ),
    "podium.v1.DeploymentSpec": frozenset({"rollbackTo"}),
    "podium.v1.ServiceSpec": frozenset(
        {
            "healthCheckNodePort",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
            "loadBalancerSourceRanges",
            "loadBalancerClass",
            "allocateLoadBalancerNodePorts",
            "trafficDistribution",
        }
    ),
    "podium.v1.PodStatus": frozenset({"nominatedNodeName", "ephemeralContainerStatuses"}),
    "podium.v1.ContainerStatus": frozenset(
        {"allocatedResources", "resources", "volumeMounts", "user", "stopSignal"}
    ),
}
# Kubernetes fields whose loss would change what runs (a volume without a
# source, a probe without an action, a variable without a value): errors.
_REJECTED: dict[str, frozenset[str]] = {
    "podium.v1.Volume": frozenset(
        {
            "configMap",
            "secret",
            "persistentVolumeClaim",
            "projected",
            "downwardAPI",
            "nfs",
            "csi",
            "ephemeral",
            "image",
            "gitRepo",
            "iscsi",
            "local",
        }
    ),
    "podium.v1.Probe": frozenset({"grpc"}),
    "podium.v1.EnvVarSource": frozenset({"configMapKeyRef", "secretKeyRef"}),
    "podium.v1.Container": frozenset({"envFrom"}),
    "podium.v1.PodSpec": frozenset({"ephemeralContainers"}),
}

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
    }
)


# --- manifest -> object ------------------------------------------------------

class _Field(NamedTuple):
    """What the walk needs of one field, worked out once per field (a descriptor's
    attributes are computed on every access)."""

    name: str  # the proto name: getattr/setattr on the message
    json_name: str
    oneof: str | None  # a real oneof's name; proto3 optional's synthetic ones are None
    type: int  # FieldDescriptor.TYPE_*
    message: Descriptor | None
    special: str  # "" or the full name of IntOrString or Timestamp
    repeated: bool
    quantity: bool
    map_value: _Field | None  # a map field's value; None: not a map


class _Table(NamedTuple):
    fields: dict[Any, _Field]  # by JSON name, and by proto name
    known: list[str]  # the JSON names, in declaration order, for "did you mean"


def _field(field: FieldDescriptor) -> _Field:
    message = field.message_type
    map_value = None
    if message is not None and message.GetOptions().map_entry:
        map_value = _field(message.fields_by_name["value"])
    oneof = field.containing_oneof
    special = message.full_name if message is not None else ""
    return _Field(
        name=field.name,
        json_name=field.json_name,
        oneof=oneof.name if oneof is not None and not oneof.name.startswith("_") else None,
        type=field.type,
        message=message,
        special=special if special in (_INT_OR_STRING, _TIMESTAMP) else "",
        repeated=field.is_repeated,
        quantity=field.full_name in _QUANTITY_FIELDS,
        map_value=map_value,
    )


# Message full name -> its table; filled as messages are first met, on any thread
# (two threads making the same table both make an equal one).
_TABLES: dict[str, _Table] = {}


def _table(descriptor: Descriptor) -> _Table:
    table = _TABLES.get(descriptor.full_name)
    if table is None:
        fields = [_field(f) for f in descriptor.fields]
        # A JSON name wins over a proto name that happens to be spelled the same.
        by_key: dict[Any, _Field] = {f.name: f for f in fields}
        by_key.update((f.json_name, f) for f in fields)
        table = _TABLES[descriptor.full_name] = _Table(by_key, [f.json_name for f in fields])
    return table


class _Walk:
    """Validates a manifest against a message descriptor, filling the message as it goes.

    The fields are set directly rather than through ``json_format.ParseDict``: the
    walk checks every value's JSON type anyway, and a second walk over the same
    tree was half of a conversion's time.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.warnings: list[str] = []

    def message(self, value: Any, descriptor: Descriptor, path: Path, target: Message) -> None:
        if not isinstance(value, dict):
            raise error(self.doc, path, f"expected a mapping, found {json_type(value)}")
        table = _table(descriptor)
        oneofs: dict[str, str] = {}
        filled: set[str] = set()
        for key, item in value.items():
            child = (*path, key)
            field = table.fields.get(key) if isinstance(key, str) else None
            if field is None:
                self._unknown(descriptor, key, child, table.known)
                continue
            if item is None:  # null means unset, as in Kubernetes
                continue
            if field.oneof is not None:
                if field.oneof in oneofs:
                    raise error(
                        self.doc, child, f"only one of {oneofs[field.oneof]} and {key} may be set"
                    )
                oneofs[field.oneof] = key
            if field.name in filled:
                # The field spelled both ways (restartPolicy, restart_policy): the
                # later one is the field's value, not added to the earlier.
                target.ClearField(field.name)
            filled.add(field.name)
            self.field(item, field, child, target)

    def _unknown(self, descriptor: Descriptor, key: Any, path: Path, known: list[str]) -> None:
        name = descriptor.full_name
        if key in _REJECTED.get(name, ()):
            raise error(self.doc, path, "not supported by podium")
        if key in _IGNORED.get(name, ()):
            self.warnings.append(located(self.doc, path, "not supported by podium, ignored"))
            return
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f', did you mean "{close[0]}"?' if close else ""
        raise error(self.doc, path, f"unknown field{hint}")

    def field(self, value: Any, field: _Field, path: Path, target: Message) -> None:
        entry = field.map_value
        if entry is not None:
            if not isinstance(value, dict):
                raise error(self.doc, path, f"expected a mapping, found {json_type(value)}")
            container: Any = getattr(target, field.name)
            for key, item in value.items():
                if not isinstance(key, str):
                    raise error(self.doc, path, f"key {key!r} must be a string")
                child = (*path, key)
                self._text(key, child)
                if entry.message is not None:
                    self.into(item, entry, child, container[key])
                else:
                    container[key] = self.scalar(item, entry, child, field.quantity)
            return
        if field.repeated:
            if not isinstance(value, list):
                raise error(self.doc, path, f"expected a list, found {json_type(value)}")
            container = getattr(target, field.name)
            if field.message is not None:
                for i, v in enumerate(value):
                    self.into(v, field, (*path, i), container.add())
            else:
                container.extend([self.scalar(v, field, (*path, i)) for i, v in enumerate(value)])
            return
        if field.message is not None:
            sub = getattr(target, field.name)
            sub.SetInParent()  # set even when empty ({}), as ParseDict does
            self.into(value, field, path, sub)
        else:
            setattr(target, field.name, self.scalar(value, field, path, field.quantity))

    def into(self, value: Any, field: _Field, path: Path, target: Message) -> None:
        """Fill ``target``, a message of ``field``'s type, from ``value``."""
        if field.special == _INT_OR_STRING and not isinstance(value, dict):
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise error(
                    self.doc, path, f"expected a number or a string, found {json_type(value)}"
                )
            if isinstance(value, int):
                self._check_int(value, FieldDescriptor.TYPE_INT32, path)
                target.int_value = value  # type: ignore[attr-defined]
            else:
                target.str_value = self._text(value, path)  # type: ignore[attr-defined]
            return
        if field.special == _TIMESTAMP:
            self._timestamp(value, path, target)
            return
        assert field.message is not None
        self.message(value, field.message, path, target)

    def scalar(self, value: Any, field: _Field, path: Path, quantity: bool = False) -> Any:
        kind = field.type
        if kind == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                raise error(self.doc, path, f"expected true or false, found {json_type(value)}")
            return value
        if kind in _INT_RANGES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise error(self.doc, path, f"expected an integer, found {json_type(value)}")
            self._check_int(value, kind, path)
            return value
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise error(self.doc, path, f"expected a number, found {json_type(value)}")
            return value
        # string, bytes and (unused) enums
        if quantity and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise error(self.doc, path, f"expected a string, found {json_type(value)}")
        if quantity and not _is_quantity(value):
            raise error(self.doc, path, f"{value!r} is not a quantity (e.g. 500m, 128Mi, 2)")
        return self._text(value, path)

    def _text(self, value: str, path: Path) -> str:
        # JSON's \ud800 escapes read as lone surrogates, which protobuf's strings
        # (UTF-8) cannot hold.
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise error(self.doc, path, "not valid Unicode (an unpaired surrogate)") from None
        return value

    def _check_int(self, value: int, kind: int, path: Path) -> None:
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise error(self.doc, path, f"{value} is out of range ({low} to {high})")

    def _timestamp(self, value: Any, path: Path, target: Message) -> None:
        if not isinstance(value, str):
            raise error(self.doc, path, f"expected an RFC 3339 time, found {json_type(value)}")
        try:
            target.FromJsonString(value)  # type: ignore[attr-defined]
        except ValueError:
            raise error(
                self.doc, path, f"{value!r} is not an RFC 3339 time (2024-05-01T12:00:00Z)"
            ) from None


def _kind_of(doc: Document) -> tuple[str, str]:
    api_version, kind = doc.body.get("apiVersion"), doc.body.get("kind")
    for name, value in (("apiVersion", api_version), ("kind", kind)):
        if value is None:
            raise error(doc, (), f"{name} is missing")
        if not isinstance(value, str):
            raise error(doc, (name,), f"expected a string, found {json_type(value)}")
    assert isinstance(api_version, str) and isinstance(kind, str)
    if kind in API_VERSIONS.get(api_version, ()):
        return api_version, kind
    if api_version not in API_VERSIONS:
        known = ", ".join(API_VERSIONS)
        what = f'apiVersion "{api_version}" (kind "{kind}") is not supported (podium knows {known})'
    else:
        kinds = ", ".join(API_VERSIONS[api_version])
        what = f'kind "{kind}" of apiVersion "{api_version}" is not supported (it has {kinds})'
    raise error(doc, (), what, line_of=("kind",))


def _apply_old_defaults(api_version: str, kind: str, body: dict[str, Any]) -> None:
    if api_version in _SELECTOR_FROM_TEMPLATE and kind in _APPS:
        spec = body.get("spec")
        if isinstance(spec, dict) and spec.get("selector") is None:
            template = spec.get("template")
            meta = template.get("metadata") if isinstance(template, dict) else None
            labels = meta.get("labels") if isinstance(meta, dict) else None
            if isinstance(labels, dict) and labels:
                body["spec"] = {**spec, "selector": {"matchLabels": dict(labels)}}


def to_object(doc: Document) -> Converted:
    """The object a document describes, wrapped in ``cluster_pb2.Object``.

    Raises ManifestError naming the file, document, field path and line.
    """
    api_version, kind = _kind_of(doc)
    body = {k: v for k, v in doc.body.items() if k not in ("apiVersion", "kind")}
    _apply_old_defaults(api_version, kind, body)
    field, message = _KIND_FIELDS[kind]
    walk = _Walk(doc)
    envelope = cluster_pb2.Object()
    target = getattr(envelope, field.name)
    # getattr on a oneof message field does not select it; an empty object would
    # otherwise leave the envelope empty.
    target.SetInParent()
    walk.message(body, message, (), target)
    return Converted(envelope, kind, api_version, tuple(walk.warnings))


def load_objects(text: str, filename: str = "<stdin>") -> list[Converted]:
    """``to_object`` of every document: all of them, or a ManifestError."""
    return [to_object(doc) for doc in load_documents(text, filename)]


# --- object -> manifest ------------------------------------------------------


def _from_protobuf_json(value: Any, descriptor: Descriptor) -> Any:
    if not isinstance(value, dict):
        return value
    fields = {f.json_name: f for f in descriptor.fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            out[key] = item
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_type = field.message_type.fields_by_name["value"]
            out[key] = {k: _from_single(v, value_type) for k, v in item.items()}
        elif field.is_repeated:
            out[key] = [_from_single(v, field) for v in item]
        else:
            out[key] = _from_single(item, field)
    return out


def _from_single(value: Any, field: FieldDescriptor) -> Any:
    message = field.message_type
    if message is None:
        # The JSON mapping writes 64-bit integers as strings; Kubernetes writes numbers.
        return int(value) if field.type in _INT64_TYPES else value
    if message.full_name == _INT_OR_STRING and isinstance(value, dict):
        return value.get("intValue", value.get("strValue"))
    if message.full_name == _TIMESTAMP:
        return value
    return _from_protobuf_json(value, message)


def to_manifest(obj: Message) -> dict[str, Any]:
    """A Kubernetes manifest (camelCase, apiVersion and kind first) of an object.

    ``obj`` is a ``cluster_pb2.Object`` or a typed object such as ``pod_pb2.Pod``.
    """
    if isinstance(obj, cluster_pb2.Object):
        field = obj.WhichOneof("kind")
        if field is None:
            raise ValueError("to_manifest: the Object envelope holds no object")
        obj = getattr(obj, field)
    descriptor: Descriptor = obj.DESCRIPTOR  # type: ignore[assignment]
    kind = descriptor.name
    if kind not in _PREFERRED:
        raise ValueError(f"to_manifest: {descriptor.full_name} is not an object kind")
    body = _from_protobuf_json(json_format.MessageToDict(obj), descriptor)
    return {"apiVersion": _PREFERRED[kind], "kind": kind, **body}
