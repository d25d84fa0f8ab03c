"""The kinds the scheduler stores, and the few facts every layer needs about them.

A stored object is a `cluster_pb2.Object`: a oneof of the kinds, whose field
name is the kind in snake_case. Everything here is a pure function of the
message, so the store, the API and the controllers agree on names and keys.
"""

from __future__ import annotations

from typing import NamedTuple

from google.protobuf.message import Message

from proto.podium.v1 import cluster_pb2, meta_pb2

# Kind name -> the Object oneof field holding it.
KINDS: dict[str, str] = {
    "Pod": "pod",
    "Node": "node",
    "Namespace": "namespace",
    "Event": "event",
    "Service": "service",
    "Endpoints": "endpoints",
    "Deployment": "deployment",
    "ReplicaSet": "replica_set",
}
_FIELD_KINDS = {field: kind for kind, field in KINDS.items()}

# Kinds that live outside namespaces: their key's namespace is "".
CLUSTER_SCOPED = frozenset({"Node", "Namespace"})

DEFAULT_NAMESPACE = "default"


class Key(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind} {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"


class UnknownKind(ValueError):
    """A request named a kind the cluster does not store."""


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UnknownKind(f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return kind


def kind_of(obj: cluster_pb2.Object) -> str:
    field = obj.WhichOneof("kind")
    if field is None:
        raise UnknownKind("object holds no kind")
    return _FIELD_KINDS[field]


def inner(obj: cluster_pb2.Object) -> Message:
    """The kind's message inside `obj` (a Pod, a Node, ...)."""
    # The oneof's field name is the attribute: no detour through the kind's name
    # (this and `meta` run for nearly every object the scheduler touches).
    field = obj.WhichOneof("kind")
    if field is None:
        raise UnknownKind("object holds no kind")
    return getattr(obj, field)  # type: ignore[no-any-return]


def meta(obj: cluster_pb2.Object) -> meta_pb2.ObjectMeta:
    return inner(obj).metadata  # type: ignore[attr-defined,no-any-return]


def wrap(message: Message) -> cluster_pb2.Object:
    """An Object holding a copy of `message` (a Pod, a Node, ...)."""
    kind = message.DESCRIPTOR.name
    obj = cluster_pb2.Object()
    getattr(obj, KINDS[check_kind(kind)]).CopyFrom(message)
    return obj


def scope(kind: str, namespace: str) -> str:
    """The namespace part of a key: "" for cluster-scoped kinds, "default" if empty."""
    if kind in CLUSTER_SCOPED:
        return ""
    return namespace or DEFAULT_NAMESPACE


def key_of(obj: cluster_pb2.Object) -> Key:
    kind = kind_of(obj)
    m = meta(obj)
    return Key(kind, scope(kind, m.namespace), m.name)
