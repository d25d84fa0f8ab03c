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
- errors that name the file, the document, the field path and the line;
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
import json
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from proto.podium.v1 import cluster_pb2, meta_pb2
from proto.quantity import QuantityError, parse_quantity

Path = tuple[str | int, ...]

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


class ManifestError(ValueError):
    """A manifest that cannot become an object; the message says where, on one line."""


class Document(NamedTuple):
    """One object's manifest as read from a file, with what locates it there."""

    filename: str
    number: int  # 1-based, counting every document of the file
    body: dict[str, Any]
    # Every path in the document (from the document's root) -> its 1-based line.
    lines: dict[Path, int]
    # Where ``body`` sits in the document: () or ("items", 3) for a List item.
    prefix: Path = ()


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


# --- reading files -----------------------------------------------------------

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader that leaves timestamps as the strings protobuf's JSON parser reads."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _node_lines(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                child = (*path, key.value)
                _node_lines(value, child, lines)
                lines[child] = key.start_mark.line + 1  # the key's line, not the value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, (*path, index), lines)


def _yaml_documents(text: str, filename: str) -> Iterator[tuple[Any, dict[Path, int]]]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            lines: dict[Path, int] = {}
            if node is not None:
                _node_lines(node, (), lines)
            yield loader.construct_document(node), lines
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or "not valid YAML"
        raise ManifestError(f"{filename}{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{filename}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


_LOOKS_LIKE_JSON = re.compile(r'\s*(\[|\{\s*["}])')


def _json_documents(text: str, filename: str) -> list[tuple[Any, dict[Path, int]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"{filename}, line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    try:  # JSON is YAML, so YAML's node marks give the lines.
        lines = next(iter(_yaml_documents(text, filename)))[1]
    except (ManifestError, StopIteration):  # JSON that YAML 1.1 reads otherwise
        lines = {}
    return [(data, lines)]


def load_documents(text: str, filename: str = "<stdin>") -> list[Document]:
    """The objects of a YAML (several documents) or JSON file, List kinds expanded.

    Empty documents are skipped but counted, so document numbers match the
    file. Raises ManifestError for a syntax error (with line and column) or a
    document that is not a mapping.
    """
    # JSON object keys are quoted; flow-style YAML ({apiVersion: v1}) also
    # starts with a brace but goes to the YAML reader.
    if _LOOKS_LIKE_JSON.match(text):
        raw = _json_documents(text, filename)
    else:
        raw = list(_yaml_documents(text, filename))
    documents: list[Document] = []
    for number, (data, lines) in enumerate(raw, start=1):
        if data is None:
            continue
        where = f"{filename}, document {number}"
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a mapping, found {_json_type(data)}")
        documents.extend(_expand_list(Document(filename, number, data, lines)))
    return documents


def _expand_list(doc: Document) -> list[Document]:
    kind = doc.body.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in doc.body):
        return [doc]
    items = doc.body["items"] or []
    if not isinstance(items, list):
        raise _error(doc, ("items",), f"expected a list, found {_json_type(items)}")
    # A typed list (PodList) may leave apiVersion and kind out of its items.
    item_kind = kind[: -len("List")] or None
    expanded = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _error(doc, ("items", index), f"expected a mapping, found {_json_type(item)}")
        if item_kind is not None:
            item = {"apiVersion": doc.body.get("apiVersion"), "kind": item_kind, **item}
        expanded.append(doc._replace(body=item, prefix=("items", index)))
    return expanded


# --- manifest -> object ------------------------------------------------------


def _format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _line(doc: Document, path: Path) -> int | None:
    full = doc.prefix + path
    while True:
        if full in doc.lines:
            return doc.lines[full]
        if not full:
            return None
        full = full[:-1]


def _located(doc: Document, path: Path, what: str, line_of: Path | None = None) -> str:
    where = f"{doc.filename}, document {doc.number}: "
    field = _format_path(doc.prefix + path)
    at = path if line_of is None else line_of
    line = _line(doc, at) if at or doc.prefix else None
    suffix = f" (line {line})" if line is not None else ""
    return f"{where}{field + ': ' if field else ''}{what}{suffix}"


def _error(doc: Document, path: Path, what: str, line_of: Path | None = None) -> ManifestError:
    return ManifestError(_located(doc, path, what, line_of))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Walk:
    """Validates a manifest against a message descriptor and rewrites it for ParseDict."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.warnings: list[str] = []

    def message(self, value: Any, descriptor: Descriptor, path: Path) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _error(self.doc, path, f"expected a mapping, found {_json_type(value)}")
        fields = {f.json_name: f for f in descriptor.fields}
        by_proto_name = {f.name: f for f in descriptor.fields}
        out: dict[str, Any] = {}
        oneofs: dict[str, str] = {}
        for key, item in value.items():
            child = (*path, key)
            field = fields.get(key) or by_proto_name.get(str(key))
            if field is None:
                self._unknown(descriptor, key, child, list(fields))
                continue
            if item is None:  # null means unset, as in Kubernetes
                continue
            oneof = field.containing_oneof
            if oneof is not None and not oneof.name.startswith("_"):
                if oneof.name in oneofs:
                    raise _error(
                        self.doc, child, f"only one of {oneofs[oneof.name]} and {key} may be set"
                    )
                oneofs[oneof.name] = str(key)
            out[field.json_name] = self.field(item, field, child)
        return out

    def _unknown(self, descriptor: Descriptor, key: Any, path: Path, known: list[str]) -> None:
        name = descriptor.full_name
        if key in _REJECTED.get(name, ()):
            raise _error(self.doc, path, "not supported by podium")
        if key in _IGNORED.get(name, ()):
            self.warnings.append(_located(self.doc, path, "not supported by podium, ignored"))
            return
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f', did you mean "{close[0]}"?' if close else ""
        raise _error(self.doc, path, f"unknown field{hint}")

    def field(self, value: Any, field: FieldDescriptor, path: Path) -> Any:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(value, dict):
                raise _error(self.doc, path, f"expected a mapping, found {_json_type(value)}")
            value_field = field.message_type.fields_by_name["value"]
            quantity = field.full_name in _QUANTITY_FIELDS
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _error(self.doc, path, f"key {key!r} must be a string")
                out[key] = self.single(item, value_field, (*path, key), quantity)
            return out
        if field.is_repeated:
            if not isinstance(value, list):
                raise _error(self.doc, path, f"expected a list, found {_json_type(value)}")
            return [self.single(v, field, (*path, i)) for i, v in enumerate(value)]
        return self.single(value, field, path, field.full_name in _QUANTITY_FIELDS)

    def single(self, value: Any, field: FieldDescriptor, path: Path, quantity: bool = False) -> Any:
        message = field.message_type
        if message is not None:
            if message.full_name == _INT_OR_STRING and not isinstance(value, dict):
                if isinstance(value, bool) or not isinstance(value, (int, str)):
                    raise _error(
                        self.doc, path, f"expected a number or a string, found {_json_type(value)}"
                    )
                if isinstance(value, int):
                    self._check_int(value, FieldDescriptor.TYPE_INT32, path)
                    return {"intValue": value}
                return {"strValue": value}
            if message.full_name == _TIMESTAMP:
                return self._timestamp(value, path)
            return self.message(value, message, path)
        kind = field.type
        if kind == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                raise _error(self.doc, path, f"expected true or false, found {_json_type(value)}")
            return value
        if kind in _INT_RANGES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _error(self.doc, path, f"expected an integer, found {_json_type(value)}")
            self._check_int(value, kind, path)
            return value
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _error(self.doc, path, f"expected a number, found {_json_type(value)}")
            return value
        # string, bytes and (unused) enums
        if quantity and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _error(self.doc, path, f"expected a string, found {_json_type(value)}")
        if quantity and not _is_quantity(value):
            raise _error(self.doc, path, f"{value!r} is not a quantity (e.g. 500m, 128Mi, 2)")
        return value

    def _check_int(self, value: int, kind: int, path: Path) -> None:
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise _error(self.doc, path, f"{value} is out of range ({low} to {high})")

    def _timestamp(self, value: Any, path: Path) -> str:
        if not isinstance(value, str):
            raise _error(self.doc, path, f"expected an RFC 3339 time, found {_json_type(value)}")
        try:
            Timestamp().FromJsonString(value)
        except ValueError:
            raise _error(
                self.doc, path, f"{value!r} is not an RFC 3339 time (2024-05-01T12:00:00Z)"
            ) from None
        return value


def _kind_of(doc: Document) -> tuple[str, str]:
    api_version, kind = doc.body.get("apiVersion"), doc.body.get("kind")
    for name, value in (("apiVersion", api_version), ("kind", kind)):
        if value is None:
            raise _error(doc, (), f"{name} is missing")
        if not isinstance(value, str):
            raise _error(doc, (name,), f"expected a string, found {_json_type(value)}")
    assert isinstance(api_version, str) and isinstance(kind, str)
    if kind in API_VERSIONS.get(api_version, ()):
        return api_version, kind
    if api_version not in API_VERSIONS:
        known = ", ".join(API_VERSIONS)
        what = f'apiVersion "{api_version}" (kind "{kind}") is not supported (podium knows {known})'
    else:
        kinds = ", ".join(API_VERSIONS[api_version])
        what = f'kind "{kind}" of apiVersion "{api_version}" is not supported (it has {kinds})'
    raise _error(doc, (), what, line_of=("kind",))


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
    rewritten = walk.message(body, message, ())
    envelope = cluster_pb2.Object()
    try:
        json_format.ParseDict(rewritten, getattr(envelope, field.name))
    except json_format.ParseError as err:  # the walk should have caught it first
        raise _error(doc, (), str(err).splitlines()[0]) from None
    # getattr on a oneof message field does not select it; an empty object would
    # otherwise leave the envelope empty.
    getattr(envelope, field.name).SetInParent()
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
