"""The ClusterService servicer: object, agent and proxy methods in one class."""

from __future__ import annotations

import threading

from proto.podium.v1 import cluster_pb2_grpc
from scheduler.api.allocation import DEFAULT_SERVICE_CIDR
from scheduler.api.nodes_service import NodeMethods, PodCidrs
from scheduler.api.objects_service import ObjectMethods
from scheduler.api.proxy import Agents, ProxyMethods
from scheduler.api.registry import Registry
from scheduler.controllers.leases import Leases


class ClusterServicer(ObjectMethods, NodeMethods, ProxyMethods,
                      cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, registry: Registry, leases: Leases, cidrs: PodCidrs,
                 heartbeat_interval: float = 1.0,
                 service_cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        self.registry = registry
        self.service_cidr = service_cidr
        self.leases = leases
        self.cidrs = cidrs
        self.heartbeat_interval = heartbeat_interval
        self.agents = Agents()
        self._register_lock = threading.Lock()

    def close(self) -> None:
        self.agents.close()
