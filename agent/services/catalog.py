"""What the node must know of the whole cluster to program Services and routes.

``ClusterCatalog`` keeps Services, Endpoints and Nodes current with one
ClusterService.Watch stream per kind (list-then-watch, resumed from the last
revision seen; an ERROR with ``relist``, or a stream broken during a list,
lists again), and hands its subscribers an immutable ``Catalog`` after each
burst of changes:

    watch threads   one per kind: apply events to that kind's map under the lock
    notify thread   waits for a change, lets the burst settle (``settle`` seconds),
                    then calls every subscriber with a fresh snapshot; again every
                    ``resync_every`` seconds without a change, so a failed apply
                    is retried and tampered rules are restored

Subscribers hear nothing until every kind has been listed once: a node that
knew Services but not yet their Endpoints would reject every connection. While
the scheduler is away the last snapshot stands.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc

from agent.errors import AgentError
from agent.retry import Backoff, Outages, cancel
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, node_pb2, service_pb2

log = logging.getLogger("podium.agent.services")

Key = tuple[str, str]  # (namespace, name)
Subscriber = Callable[["Catalog"], object]  # what it returns is ignored

KINDS = ("Service", "Endpoints", "Node")
SETTLE = 0.02  # seconds a burst of changes may take before subscribers hear of it
RESYNC_EVERY = 30.0
# The channel's reconnect back-off, short: gRPC's default (up to 120 s) would keep
# the catalog stale long after the scheduler is back.
_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.min_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 5000)]


@dataclass(frozen=True)
class Catalog:
    """One consistent view: read it, never change it (the messages are shared)."""

    services: Mapping[Key, service_pb2.Service] = field(
        default_factory=lambda: MappingProxyType({}))
    endpoints: Mapping[Key, service_pb2.Endpoints] = field(
        default_factory=lambda: MappingProxyType({}))
    nodes: Mapping[str, node_pb2.Node] = field(default_factory=lambda: MappingProxyType({}))


def catalog_of(services: list[service_pb2.Service] | None = None,
               endpoints: list[service_pb2.Endpoints] | None = None,
               nodes: list[node_pb2.Node] | None = None) -> Catalog:
    """A Catalog from plain lists (tests, tools)."""
    return Catalog(
        MappingProxyType({(s.metadata.namespace, s.metadata.name): s for s in services or []}),
        MappingProxyType({(e.metadata.namespace, e.metadata.name): e for e in endpoints or []}),
        MappingProxyType({n.metadata.name: n for n in nodes or []}),
    )


def _key(obj: cluster_pb2.Object) -> tuple[object, object] | None:
    """The kind's map key and the inner message, or None for an object of no use."""
    which = obj.WhichOneof("kind")
    if which == "service":
        meta = obj.service.metadata
        return (meta.namespace, meta.name), obj.service
    if which == "endpoints":
        meta = obj.endpoints.metadata
        return (meta.namespace, meta.name), obj.endpoints
    if which == "node":
        return obj.node.metadata.name, obj.node
    return None


class _KindState:
    """One kind's objects and where its stream stands (the watch thread's own)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[object, object] = {}
        self.revision = 0
        self.needs_list = True
        self.listed = False  # a first list has completed
        self.listing: dict[object, object] | None = None  # a list under way


class ClusterCatalog:
    """Services, Endpoints and Nodes of the scheduler at ``address``, kept current.

    ``address`` is ``host:port`` or ``unix:PATH``. ``stop`` ends every thread;
    ``close()`` sets it (the agent passes its own, as with the scheduler link).
    """

    def __init__(self, address: str, stop: threading.Event, *, settle: float = SETTLE,
                 resync_every: float = RESYNC_EVERY) -> None:
        self.address = address
        self.stop = stop
        self.settle = settle
        self.resync_every = resync_every
        self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = cluster_pb2_grpc.ClusterServiceStub(self._channel)
        self._states = {kind: _KindState(kind) for kind in KINDS}
        self._lock = threading.Condition()
        self._changed = False
        self._snapshot = Catalog()
        self._subscribers: list[Subscriber] = []
        self._calls: dict[str, grpc.CallIterator[cluster_pb2.WatchEvent]] = {}
        self._threads: list[threading.Thread] = []
        self._synced = threading.Event()
        self._outages = Outages(log, address)

    # --- the public side ----------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(catalog)`` from the notify thread after each batch of changes
        (and at once, if the catalog is already synced). Exceptions are logged."""
        with self._lock:
            self._subscribers.append(callback)
            if self._synced.is_set():
                self._changed = True
                self._lock.notify_all()

    def snapshot(self) -> Catalog:
        with self._lock:
            return self._snapshot

    @property
    def synced(self) -> bool:
        """Every kind has been listed once."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def start(self) -> None:
        for kind in KINDS:
            self._spawn(f"watch-{kind.lower()}", functools.partial(self._watch, kind))
        self._spawn("notify", self._notify_loop)

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            calls = list(self._calls.values())
            self._lock.notify_all()
        for call in calls:
            cancel(call)
        for thread in self._threads:
            thread.join(timeout=10.0)
        self._threads.clear()
        self._channel.close()

    # --- watching -----------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"podium-catalog-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch(self, kind: str) -> None:
        state = self._states[kind]
        backoff = Backoff()
        while not self.stop.is_set():
            if state.listing is not None:  # broken during a list: it is incomplete
                state.needs_list = True
            if state.needs_list:
                state.listing = {}
            request = cluster_pb2.WatchRequest(
                kind=kind, from_revision=0 if state.needs_list else state.revision,
                allow_bookmarks=True)
            try:
                call = self._stub.Watch(request)
                with self._lock:
                    self._calls[kind] = call
                if self.stop.is_set():
                    cancel(call)
                for event in call:
                    backoff.reset()
                    self._outages.up(f"{kind} watch")
                    if event.type == cluster_pb2.WatchEvent.ERROR:
                        log.warning("scheduler %s: %s watch: %s%s", self.address, kind,
                                    event.message, " (listing again)" if event.relist else "")
                        if event.relist:
                            state.needs_list = True
                        break
                    self._handle(state, event)
            except grpc.RpcError as e:
                if self.stop.is_set():
                    return
                self._outages.down(f"{kind} watch", e)
            except Exception:  # never let one odd event end the node's Services
                log.exception("scheduler %s: %s watch failed (listing again)", self.address,
                              kind)
                state.needs_list = True
            finally:
                with self._lock:
                    done = self._calls.pop(kind, None)
                if done is not None:
                    cancel(done)  # a stream left after an ERROR must not linger
            self.stop.wait(backoff.next())

    def _handle(self, state: _KindState, event: cluster_pb2.WatchEvent) -> None:
        if event.type == cluster_pb2.WatchEvent.BOOKMARK:
            if event.revision > 0:
                state.revision = event.revision
            if state.listing is not None:  # the end of a list: it replaces the kind's map
                with self._lock:
                    if state.items != state.listing or not state.listed:
                        self._changed = True
                    state.items, state.listing = state.listing, None
                    state.listed, state.needs_list = True, False
                    if all(s.listed for s in self._states.values()):
                        self._synced.set()
                    self._lock.notify_all()
            return
        found = _key(event.object)
        if found is None or event.type not in (cluster_pb2.WatchEvent.ADDED,
                                               cluster_pb2.WatchEvent.MODIFIED,
                                               cluster_pb2.WatchEvent.DELETED):
            return
        key, obj = found
        if state.listing is not None:
            if event.type != cluster_pb2.WatchEvent.DELETED:
                state.listing[key] = obj
            return
        if event.revision > 0:
            state.revision = event.revision
        with self._lock:
            if event.type == cluster_pb2.WatchEvent.DELETED:
                self._changed |= state.items.pop(key, None) is not None
            elif state.items.get(key) != obj:
                state.items[key] = obj
                self._changed = True
            self._lock.notify_all()

    # --- notifying ----------------------------------------------------------------

    def _notify_loop(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            with self._lock:
                while not self.stop.is_set() and not (self._changed and self._synced.is_set()):
                    left = last + self.resync_every - time.monotonic()
                    if left <= 0 and self._synced.is_set():
                        self._changed = True
                        break
                    self._lock.wait(timeout=max(left, 0.05) if self._synced.is_set() else None)
            if self.stop.is_set():
                return
            # Let the rest of a burst (a rollout, a relist) land before telling anyone.
            self.stop.wait(self.settle)
            with self._lock:
                self._changed = False
                self._snapshot = Catalog(
                    MappingProxyType(dict(self._states["Service"].items)),  # type: ignore[arg-type]
                    MappingProxyType(dict(self._states["Endpoints"].items)),  # type: ignore[arg-type]
                    MappingProxyType(dict(self._states["Node"].items)),  # type: ignore[arg-type]
                )
                snapshot, subscribers = self._snapshot, list(self._subscribers)
            last = time.monotonic()
            for callback in subscribers:
                try:
                    callback(snapshot)
                except AgentError as e:  # says what and where in one line
                    log.error("%s", e)
                except Exception:
                    log.exception("catalog subscriber %r failed", callback)
