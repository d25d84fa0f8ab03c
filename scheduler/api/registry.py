"""The object registry: the API's rules between every writer and the store.

Users (through the gRPC servicers) and the scheduler's own loops (placement,
controllers) write through one Registry, so every stored object has been
defaulted and validated, carries a uid, timestamps and a generation, and
pods are deleted gracefully. It implements `scheduler.cluster.Cluster`.

The store keeps objects as given; this is the only place that decides what
an object may become.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from contextlib import AbstractContextManager

from google.protobuf.timestamp_pb2 import Timestamp

from proto.podium.v1 import cluster_pb2, core_pb2, meta_pb2, pod_pb2, service_pb2
from scheduler import objects
from scheduler.api.allocation import DEFAULT_SERVICE_CIDR, ServiceAllocator
from scheduler.api.defaults import apply_defaults, carry_over
from scheduler.api.service_checks import namespace_templates, why_no_traffic
from scheduler.api.validation import Invalid, validate
from scheduler.objects import DEFAULT_NAMESPACE, Key
from scheduler.store.base import AlreadyExists, Conflict, NotFound, Store, Watch

# An object as a write would store it, and validation's warnings.
Prepared = tuple[cluster_pb2.Object, list[str]]
# Characters of a generated name's suffix, as Kubernetes (no vowels: no words).
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
# Pods that never reached a node, and any non-pod kind, go at once.
_GRACEFUL_KINDS = frozenset({"Pod"})


def timestamp_now() -> Timestamp:
    """The current time as the API stores it."""
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def generated_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(5))


def pod_stopped(pod: pod_pb2.Pod) -> bool:
    """No container of the pod runs any more, as its agent reported."""
    if pod.status.phase in ("Succeeded", "Failed"):
        return True
    statuses = list(pod.status.container_statuses) + list(pod.status.init_container_statuses)
    return bool(statuses) and not any(s.state.HasField("running") for s in statuses)


class Registry:
    def __init__(self, store: Store, service_cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        self.store = store
        # Cluster IPs and node ports; what is taken is read from the stored Services.
        self.services = ServiceAllocator(
            lambda: [o.service for o in store.list("Service")[0]], service_cidr)
        self._events_lock = threading.Lock()
        # (involved uid, reason, message) -> the Event's key, to count repeats.
        self._events: dict[tuple[str, str, str], Key] = {}

    # --- reads ------------------------------------------------------------

    def get(self, key: Key) -> cluster_pb2.Object:
        return self.store.get(key)

    def list(self, kind: str, namespace: str = "") -> tuple[list[cluster_pb2.Object], int]:
        objects.check_kind(kind)
        if kind in objects.CLUSTER_SCOPED:
            namespace = ""
        return self.store.list(kind, namespace)

    def watch(self, kind: str = "", namespace: str = "",
              from_revision: int | None = None, node: str = "",
              kinds: tuple[str, ...] = ()) -> Watch:
        if kind:
            objects.check_kind(kind)
            if kind in objects.CLUSTER_SCOPED:
                namespace = ""
        return self.store.watch(kind, namespace, from_revision, node, kinds)

    # --- writes -----------------------------------------------------------

    def batch(self) -> AbstractContextManager[None]:
        return self.store.batch()

    def prepare_create(self, obj: cluster_pb2.Object) -> Prepared:
        """The object as create() would store it, and validation's warnings."""
        new = cluster_pb2.Object()
        new.CopyFrom(obj)
        kind = objects.kind_of(new)
        meta = objects.meta(new)
        meta.namespace = objects.scope(kind, meta.namespace)
        if not meta.name and meta.generate_name:
            meta.name = generated_name(meta.generate_name)
        apply_defaults(new)
        warnings = validate(new)
        meta.uid = str(uuid.uuid4())
        meta.creation_timestamp.CopyFrom(timestamp_now())
        meta.generation = 1
        meta.resource_version = ""
        meta.ClearField("deletion_timestamp")
        meta.ClearField("deletion_grace_period_seconds")
        if kind == "Pod" and not new.pod.status.phase:
            new.pod.status.phase = "Pending"
        if meta.namespace:
            self._need_namespace(meta.namespace)
        if kind == "Service":
            warnings += self._prepare_service(new.service, None)
        return new, warnings

    def create(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        new, _ = self.prepare_create(obj)
        return self.store.create(new)

    def prepare_update(self, obj: cluster_pb2.Object) -> Prepared:
        """The stored object with obj's metadata and spec, as update() would
        store it, and validation's warnings."""
        key = objects.key_of(obj)
        if not objects.meta(obj).resource_version:
            raise Invalid("metadata.resourceVersion",
                          "must be the one last read (use Apply to write without it)")
        old = self.store.get(key)
        new = cluster_pb2.Object()
        if objects.inner(obj).DESCRIPTOR.fields_by_name.get("spec") is not None:
            new.CopyFrom(old)
            src_meta, dst_meta = objects.meta(obj), objects.meta(new)
            for field in ("labels", "annotations", "owner_references", "finalizers"):
                dst_meta.ClearField(field)
                getattr(dst_meta, field).MergeFrom(getattr(src_meta, field))
            dst_meta.resource_version = src_meta.resource_version
            objects.inner(new).spec.CopyFrom(objects.inner(obj).spec)  # type: ignore[attr-defined]
        else:  # kinds without a spec (Event, Endpoints): all but the server's fields
            new.CopyFrom(obj)
            _keep_server_fields(objects.meta(old), objects.meta(new))
            dst_meta = objects.meta(new)
        carry_over(new, old)
        if objects.kind_of(new) == "Service" == objects.kind_of(old):
            self.services.drop_type_dependent(new.service.spec, old.service.spec)
        apply_defaults(new)
        warnings = validate(new, old)
        if objects.kind_of(new) == "Service":
            warnings += self._prepare_service(new.service, old.service)
        if _spec_of(new) != _spec_of(old):
            dst_meta.generation = objects.meta(old).generation + 1
        return new, warnings

    def _prepare_service(self, service: service_pb2.Service,
                         old: service_pb2.Service | None) -> tuple[str, ...]:
        """Cluster IP and node ports assigned; why no traffic would flow, as warnings."""
        self.services.assign(service, old)
        return tuple(why_no_traffic(service, namespace_templates(
            self.store.list, service.metadata.namespace)))

    def update(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        new, _ = self.prepare_update(obj)
        return self.store.update(new)

    def update_status(self, obj: cluster_pb2.Object) -> cluster_pb2.Object:
        old = self.store.get(objects.key_of(obj))
        new = cluster_pb2.Object()
        new.CopyFrom(old)
        inner = objects.inner(new)
        if inner.DESCRIPTOR.fields_by_name.get("status") is None:
            raise Invalid("status", f"{objects.kind_of(obj)} has no status")
        inner.status.CopyFrom(objects.inner(obj).status)  # type: ignore[attr-defined]
        objects.meta(new).resource_version = objects.meta(obj).resource_version
        return self.store.update(new)

    def bind(self, key: Key, node_name: str, resource_version: str) -> cluster_pb2.Object:
        current = self.store.get(key)
        pod = current.pod
        if pod.metadata.resource_version != resource_version:
            raise Conflict(f"{key} changed since version {resource_version}")
        if pod.spec.node_name:
            raise Conflict(f"{key} is already bound to node {pod.spec.node_name}")
        if pod.metadata.HasField("deletion_timestamp"):
            raise Conflict(f"{key} is being deleted")
        pod.spec.node_name = node_name
        set_pod_condition(pod, "PodScheduled", "True")
        return self.store.update(current)

    def delete(self, key: Key, grace_period_seconds: int | None = None,
               force: bool = False, resource_version: str = "") -> cluster_pb2.Object:
        if resource_version:
            return self._delete_once(key, grace_period_seconds, force, resource_version)
        # Without a version the caller wants it gone whatever it became: a
        # controller's write between our read and our delete is no conflict.
        for _ in range(10):
            try:
                return self._delete_once(key, grace_period_seconds, force, "")
            except Conflict:
                continue
        raise Conflict(f"{key} kept changing while being deleted; try again")

    def _delete_once(self, key: Key, grace_period_seconds: int | None, force: bool,
                     resource_version: str) -> cluster_pb2.Object:
        current = self.store.get(key)
        if resource_version and objects.meta(current).resource_version != resource_version:
            raise Conflict(f"{key} changed since version {resource_version}")
        if key.kind == "Namespace":
            if key.name == DEFAULT_NAMESPACE:
                raise Invalid("metadata.name", 'the "default" namespace cannot be deleted')
            self._delete_namespace_contents(key.name)
        if key.kind not in _GRACEFUL_KINDS or force or not current.pod.spec.node_name \
                or grace_period_seconds == 0 or pod_stopped(current.pod):
            gone = self.store.delete(key, objects.meta(current).resource_version)
            if key.kind == "Service":
                self.services.release(key)  # its address and ports are free again
            return gone
        pod = current.pod
        grace = grace_period_seconds
        if grace is None:
            grace = pod.spec.termination_grace_period_seconds \
                if pod.spec.HasField("termination_grace_period_seconds") else 30
        if pod.metadata.HasField("deletion_timestamp") \
                and pod.metadata.deletion_grace_period_seconds <= grace:
            return current  # already going, at least as fast
        pod.metadata.deletion_timestamp.CopyFrom(timestamp_now())
        pod.metadata.deletion_grace_period_seconds = grace
        return self.store.update(current)

    def _delete_namespace_contents(self, namespace: str) -> None:
        for kind in objects.KINDS:
            if kind in objects.CLUSTER_SCOPED:
                continue
            items, _ = self.store.list(kind, namespace)
            for item in items:
                try:
                    self.delete(objects.key_of(item))
                except NotFound:
                    pass

    def _need_namespace(self, namespace: str) -> None:
        try:
            self.store.get(Key("Namespace", "", namespace))
        except NotFound:
            if namespace != DEFAULT_NAMESPACE:
                raise NotFound(f'namespace "{namespace}" not found') from None
            self.ensure_namespace(DEFAULT_NAMESPACE)

    def ensure_namespace(self, name: str) -> None:
        """Creates the namespace if it is missing (the default one at start)."""
        ns = core_pb2.Namespace()
        ns.metadata.name = name
        ns.status.phase = "Active"
        new = objects.wrap(ns)
        meta = objects.meta(new)
        meta.uid = str(uuid.uuid4())
        meta.creation_timestamp.CopyFrom(timestamp_now())
        meta.generation = 1
        try:
            self.store.create(new)
        except AlreadyExists:
            pass

    # --- events -----------------------------------------------------------

    def event(self, about: cluster_pb2.Object, reason: str, message: str,
              type: str = "Normal") -> None:
        """Records an Event about `about`; a repeat bumps the count of the last one."""
        kind = objects.kind_of(about)
        meta = objects.meta(about)
        namespace = meta.namespace or DEFAULT_NAMESPACE
        now = timestamp_now()
        memo = (meta.uid, reason, message)
        # The memo's lock is never held across a store write: a writer in a
        # store batch (the placer) may record events while holding the
        # store's lock, so taking them in the other order would deadlock.
        with self._events_lock:
            seen = self._events.get(memo)
        if seen is not None:
            try:
                stored = self.store.get(seen)
                stored.event.count += 1
                stored.event.last_timestamp.CopyFrom(now)
                self.store.update(stored)
                return
            except (NotFound, Conflict):
                pass
        event = core_pb2.Event(reason=reason, message=message, type=type, count=1)
        event.metadata.name = f"{meta.name}.{secrets.token_hex(8)}"
        event.metadata.namespace = namespace
        event.involved_object.kind = kind
        event.involved_object.namespace = meta.namespace
        event.involved_object.name = meta.name
        event.involved_object.uid = meta.uid
        event.involved_object.resource_version = meta.resource_version
        event.source.component = "podium-scheduler"
        event.first_timestamp.CopyFrom(now)
        event.last_timestamp.CopyFrom(now)
        wrapped = objects.wrap(event)
        created_meta = objects.meta(wrapped)
        created_meta.uid = str(uuid.uuid4())
        created_meta.creation_timestamp.CopyFrom(now)
        stored = self.store.create(wrapped)
        with self._events_lock:
            self._events[memo] = objects.key_of(stored)
            if len(self._events) > 10_000:  # only recent repeats are merged
                self._events.pop(next(iter(self._events)))


def _keep_server_fields(old: meta_pb2.ObjectMeta, new: meta_pb2.ObjectMeta) -> None:
    """What only the server sets survives a client's write."""
    new.uid, new.generation, new.namespace = old.uid, old.generation, old.namespace
    for field in ("creation_timestamp", "deletion_timestamp",
                  "deletion_grace_period_seconds"):
        new.ClearField(field)
    if old.HasField("creation_timestamp"):
        new.creation_timestamp.CopyFrom(old.creation_timestamp)
    if old.HasField("deletion_timestamp"):
        new.deletion_timestamp.CopyFrom(old.deletion_timestamp)
    if old.HasField("deletion_grace_period_seconds"):
        new.deletion_grace_period_seconds = old.deletion_grace_period_seconds


def _spec_of(obj: cluster_pb2.Object) -> bytes:
    inner = objects.inner(obj)
    if inner.DESCRIPTOR.fields_by_name.get("spec") is None:
        return b""
    return inner.spec.SerializeToString(deterministic=True)  # type: ignore[attr-defined,no-any-return]


def set_pod_condition(pod: pod_pb2.Pod, type: str, status: str, reason: str = "",
                      message: str = "") -> bool:
    """Sets one of the pod's conditions; False if it was already so."""
    for condition in pod.status.conditions:
        if condition.type == type:
            if (condition.status, condition.reason, condition.message) == (status, reason,
                                                                          message):
                return False
            if condition.status != status:
                condition.last_transition_time.CopyFrom(timestamp_now())
            condition.status, condition.reason, condition.message = status, reason, message
            return True
    pod.status.conditions.add(type=type, status=status, reason=reason, message=message,
                              last_transition_time=timestamp_now())
    return True
