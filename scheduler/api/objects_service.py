"""ClusterService's object methods: Create, Get, List, Update, Apply, Delete, Watch, Scale.

Thin: each turns a request into a Registry call and the Registry's errors
into status codes (scheduler/api/errors.py). Selectors are parsed once per
request and checked per object.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from proto.podium.v1 import cluster_pb2
from scheduler import objects
from scheduler.api import selectors, watching
from scheduler.api.errors import Precondition, streaming, unary
from scheduler.api.registry import Registry
from scheduler.api.validation import Invalid
from scheduler.objects import Key
from scheduler.store.base import Conflict, NotFound

# Annotations the controllers own: an apply that does not name them keeps them.
_SERVER_ANNOTATION_PREFIXES = ("deployment.kubernetes.io/",)


def _key(kind: str, namespace: str, name: str) -> Key:
    objects.check_kind(kind)
    if not name:
        raise Invalid("name", "is required")
    return Key(kind, objects.scope(kind, namespace), name)


def matcher(kind: str, label_selector: str, field_selector: str) -> watching.Predicate:
    """One predicate for a request's label and field selectors."""
    labels = selectors.parse_label_selector(label_selector)
    fields = selectors.parse_field_selector(field_selector, kind)
    if labels.empty and fields.empty:
        return lambda obj: True
    return lambda obj: labels.matches(objects.meta(obj).labels) and fields.matches(obj)


class ObjectMethods:
    """Mixed into the ClusterService servicer (scheduler/api/service.py)."""

    registry: Registry

    @unary
    def Create(self, request: cluster_pb2.CreateRequest,
               context: grpc.ServicerContext) -> cluster_pb2.CreateResponse:
        new, warnings = self.registry.prepare_create(request.object)
        stored = new if request.dry_run else self.registry.store.create(new)
        return cluster_pb2.CreateResponse(object=stored, warnings=warnings)

    @unary
    def Get(self, request: cluster_pb2.GetRequest,
            context: grpc.ServicerContext) -> cluster_pb2.Object:
        return self.registry.get(_key(request.kind, request.namespace, request.name))

    @unary
    def List(self, request: cluster_pb2.ListRequest,
             context: grpc.ServicerContext) -> cluster_pb2.ListResponse:
        matches = matcher(request.kind, request.label_selector, request.field_selector)
        items, revision = self.registry.list(request.kind, request.namespace)
        return cluster_pb2.ListResponse(items=[i for i in items if matches(i)],
                                        revision=revision)

    @unary
    def Update(self, request: cluster_pb2.UpdateRequest,
               context: grpc.ServicerContext) -> cluster_pb2.UpdateResponse:
        new, warnings = self.registry.prepare_update(request.object)
        stored = new if request.dry_run else self.registry.store.update(new)
        return cluster_pb2.UpdateResponse(object=stored, warnings=warnings)

    @unary
    def Apply(self, request: cluster_pb2.ApplyRequest,
              context: grpc.ServicerContext) -> cluster_pb2.ApplyResponse:
        # Create-or-update races another writer only on the store's
        # compare-and-swap; a lost race is retried from a fresh read.
        for _ in range(5):
            try:
                return self._apply_once(request)
            except Conflict:
                continue
        raise Conflict(f"{objects.key_of(request.object)} kept changing; try again")

    def _apply_once(self, request: cluster_pb2.ApplyRequest) -> cluster_pb2.ApplyResponse:
        try:
            current = self.registry.get(objects.key_of(request.object))
        except NotFound:
            new, warnings = self.registry.prepare_create(request.object)
            stored = new if request.dry_run else self.registry.store.create(new)
            return cluster_pb2.ApplyResponse(object=stored, action="created",
                                             warnings=warnings)
        wanted = cluster_pb2.Object()
        wanted.CopyFrom(request.object)
        meta, current_meta = objects.meta(wanted), objects.meta(current)
        meta.resource_version = current_meta.resource_version
        for key, value in current_meta.annotations.items():
            if key.startswith(_SERVER_ANNOTATION_PREFIXES) and key not in meta.annotations:
                meta.annotations[key] = value
        new, warnings = self.registry.prepare_update(wanted)
        if new == current:
            return cluster_pb2.ApplyResponse(object=current, action="unchanged",
                                             warnings=warnings)
        stored = new if request.dry_run else self.registry.store.update(new)
        return cluster_pb2.ApplyResponse(object=stored, action="configured", warnings=warnings)

    @unary
    def Delete(self, request: cluster_pb2.DeleteRequest,
               context: grpc.ServicerContext) -> cluster_pb2.Object:
        policy = request.propagation_policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise Invalid("propagationPolicy", f"{policy!r} is not Background, Foreground "
                          "or Orphan")
        key = _key(request.kind, request.namespace, request.name)
        if policy == "Orphan":
            self._orphan_dependents(key)
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") \
            else None
        if grace is not None and grace < 0:
            raise Invalid("gracePeriodSeconds", "must not be negative")
        return self.registry.delete(key, grace, request.force, request.resource_version)

    def _orphan_dependents(self, owner: Key) -> None:
        """Drops the owner reference from what `owner` owns, so garbage
        collection keeps them."""
        uid = objects.meta(self.registry.get(owner)).uid
        for kind in ("ReplicaSet", "Pod"):
            items, _ = self.registry.list(kind, owner.namespace)
            for item in items:
                refs = objects.meta(item).owner_references
                kept = [ref for ref in refs if ref.uid != uid]
                if len(kept) != len(refs):
                    del refs[:]
                    refs.extend(kept)
                    self.registry.update(item)

    @streaming
    def Watch(self, request: cluster_pb2.WatchRequest,
              context: grpc.ServicerContext) -> Iterator[cluster_pb2.WatchEvent]:
        if not request.kind:
            raise Invalid("kind", "is required")
        objects.check_kind(request.kind)
        if request.from_revision < 0:
            raise Invalid("fromRevision", f"must not be negative, got {request.from_revision}")
        matches = matcher(request.kind, request.label_selector, request.field_selector)
        namespace = objects.scope(request.kind, request.namespace) if request.namespace else ""
        yield from watching.stream(self.registry, request.kind, namespace, matches,
                                   request.from_revision, context,
                                   bookmark_every=5.0 if request.allow_bookmarks else None)

    @unary
    def Scale(self, request: cluster_pb2.ScaleRequest,
              context: grpc.ServicerContext) -> cluster_pb2.Object:
        if request.kind not in ("Deployment", "ReplicaSet"):
            raise Invalid("kind", f"{request.kind!r} cannot be scaled (Deployment or ReplicaSet)")
        if request.replicas < 0:
            raise Invalid("spec.replicas", f"must not be negative, got {request.replicas}")
        key = _key(request.kind, request.namespace, request.name)
        for _ in range(5):
            current = self.registry.get(key)
            meta = objects.meta(current)
            if request.resource_version and meta.resource_version != request.resource_version:
                raise Conflict(f"{key} changed since version {request.resource_version}")
            objects.inner(current).spec.replicas = request.replicas  # type: ignore[attr-defined]
            try:
                return self.registry.update(current)
            except Conflict:
                if request.resource_version:
                    raise
        raise Precondition(f"{key} kept changing; try again")
