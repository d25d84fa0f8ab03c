"""A pod's hostPorts on the node's NAT table: all of them published, or none.

Published once the sandbox is made (the DNAT needs the pod's address), before any
container starts, and unpublished when the pod goes. With ``hostNetwork`` there is
nothing to publish: the containers bind the node's ports themselves. Init
containers' ports are not published (they run before the pod serves anything).
"""

from __future__ import annotations

from typing import Protocol

from agent.pods.errors import PodError
from proto.podium.v1 import pod_pb2

Mapping_ = tuple[str, int, int, str]  # (pod ip, containerPort, hostPort, protocol)


class HostPorts(Protocol):
    """The node's hostPort publisher: ``agent.network.NatTable`` is one."""

    def publish(self, pod_ip: str, container_port: int, host_port: int,
                protocol: str) -> object: ...
    def unpublish(self, pod_ip: str, container_port: int, host_port: int,
                  protocol: str) -> object: ...


def wanted_ports(pod: pod_pb2.Pod, pod_ip: str) -> list[Mapping_]:
    if pod.spec.host_network:
        return []
    return [(pod_ip, port.container_port, port.host_port, port.protocol or "TCP")
            for container in pod.spec.containers for port in container.ports
            if port.host_port]


class PodPorts:
    """The hostPorts one pod has published, so they can be taken back."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.published: list[Mapping_] = []

    def publish(self, table: HostPorts | None, pod: pod_pb2.Pod, pod_ip: str) -> None:
        """Every container's hostPorts, or none: a failure unpublishes this round's."""
        wanted = wanted_ports(pod, pod_ip)
        if not wanted:
            return
        if table is None:
            raise PodError(f"pod {self.uid}: hostPort {wanted[0][2]}: no NAT table on "
                           "this node to publish it")
        try:
            for mapping in wanted:
                if mapping not in self.published:
                    table.publish(*mapping)
                    self.published.append(mapping)
        except BaseException:
            self.unpublish(table)
            raise

    def unpublish(self, table: HostPorts | None) -> None:
        while self.published and table is not None:
            table.unpublish(*self.published[-1])
            self.published.pop()
