"""One scheduler process: store, registry, gRPC API, placement and controllers.

    store (SQLite) ← registry (defaults, validation, uids, graceful delete)
                       ↑            ↑                ↑
               ClusterService   Placer       ControllerManager
               (gRPC: users,    (binds       (ReplicaSets, Deployments,
                agents)          pods)        node lifecycle, GC)

The loops and the servicers share the registry; nothing but the registry
writes to the store.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import NamedTuple

import grpc

from proto.podium.v1 import cluster_pb2
from scheduler.api.allocation import DEFAULT_SERVICE_CIDR, service_network
from scheduler.api.nodes_service import DEFAULT_CLUSTER_CIDR, PodCidrs
from scheduler.api.registry import Registry
from scheduler.api.service import ClusterServicer
from scheduler.controllers.leases import Leases
from scheduler.controllers.manager import ControllerManager
from scheduler.objects import DEFAULT_NAMESPACE
from scheduler.placement import Placer
from scheduler.store import open_store
from scheduler.store.base import Store

log = logging.getLogger("podium.scheduler")

SERVICE = cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name
DEFAULT_LISTEN = "127.0.0.1:7400"
DEFAULT_DATA = Path("/var/lib/podium/scheduler")
# Requests carry whole objects; a 4 MiB default is small for a List of pods.
_MAX_MESSAGE = 64 * 1024 * 1024


class SchedulerConfig(NamedTuple):
    listen: str = DEFAULT_LISTEN
    data: Path = DEFAULT_DATA
    # "" : sqlite in `data`; else an open_store URL.
    store: str = ""
    node_grace: float = 5.0
    eviction_timeout: float = 5.0
    heartbeat_interval: float = 1.0
    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    # Cluster IPs come from here; its 10th address is the cluster DNS.
    service_cidr: str = DEFAULT_SERVICE_CIDR
    # Each watch stream holds a worker thread while it is open.
    workers: int = 256


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.store: Store | None = None
        self.server: grpc.Server | None = None
        self.port = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Opens the store and serves; returns once the port is bound."""
        config = self.config
        service_cidr = str(service_network(config.service_cidr))
        self.store = open_store(config.store or str((config.data / 'cluster.db').absolute()))
        self.registry = Registry(self.store, service_cidr)
        self.registry.ensure_namespace(DEFAULT_NAMESPACE)
        self.leases = Leases()
        self.servicer = ClusterServicer(self.registry, self.leases,
                                        PodCidrs(config.cluster_cidr),
                                        config.heartbeat_interval, service_cidr)
        self.server, self.port = self._serve()
        self.placer = Placer(self.registry)
        self.controllers = ControllerManager(self.registry, self.leases,
                                             node_grace=config.node_grace,
                                             eviction_timeout=config.eviction_timeout)
        placer = threading.Thread(target=self.placer.run, args=(self.stop_event,),
                                  name="placement", daemon=True)
        placer.start()
        self._threads.append(placer)
        self.controllers.start()
        log.info("podium-scheduler serving on %s (store %s)", config.listen,
                 config.store or config.data)

    def _serve(self) -> tuple[grpc.Server, int]:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from proto.podium.v1 import cluster_pb2_grpc

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.config.workers,
                                       thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE),
                     ("grpc.max_send_message_length", _MAX_MESSAGE),
                     ("grpc.so_reuseport", 0)])
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(self.servicer, server)
        checker = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        for name in ("", SERVICE):
            checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        try:
            port = server.add_insecure_port(self.config.listen)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {self.config.listen}: {error}") from None
        if port == 0:
            raise OSError(f"cannot listen on {self.config.listen}: address in use or invalid")
        server.start()
        return server, port

    def wait(self) -> None:
        self.stop_event.wait()

    def close(self) -> None:
        self.stop_event.set()
        if getattr(self, "controllers", None) is not None:
            self.controllers.close()
        if self.server is not None:
            self.server.stop(grace=1.0).wait()
            self.server = None
        for thread in self._threads:
            thread.join(timeout=5)
        if getattr(self, "servicer", None) is not None:
            self.servicer.close()
        if self.store is not None:
            self.store.close()
            self.store = None
