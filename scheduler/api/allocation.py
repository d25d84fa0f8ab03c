"""Cluster IPs and node ports for Services: each handed out once.

    allocator = ServiceAllocator(stored_services, "10.96.0.0/16")
    allocator.assign(service, old)     # fills spec.clusterIP(s) and nodePorts,
                                       # or raises Invalid naming the field
    allocator.release(key)             # the Service was deleted

What is taken is read from the stored Services on every call, so a deleted
Service's address is free again at once. The API servicers store an object
after the registry prepared it, so an address handed out but not yet stored is
held in memory for a short while (`HOLD_SECONDS`); the same Service asking
again (a dry run, then the real write) gets the held values back.

Addresses and ports are picked from a random start and then in order, not
always the lowest, so an address just freed is not reused at once.
Never handed out: the network's own and broadcast addresses and its 10th
address (the cluster DNS, 10.96.0.10 by default), which is refused when
asked for too.
"""

from __future__ import annotations

import ipaddress
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from proto.podium.v1 import service_pb2
from scheduler.api.errors import Precondition
from scheduler.api.report import NODE_PORT_RANGE, FieldError, Invalid
from scheduler.objects import Key, scope

DEFAULT_SERVICE_CIDR = "10.96.0.0/16"
# The cluster DNS answers on the service network's 10th address.
DNS_OFFSET = 10
# How long an address handed out but not (yet) stored stays taken.
HOLD_SECONDS = 60.0
NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})


def service_network(cidr: str) -> ipaddress.IPv4Network:
    """The service network `cidr`; ValueError naming what is wrong with it."""
    try:
        network = ipaddress.ip_network(cidr)
    except ValueError as e:
        raise ValueError(f"service CIDR {cidr!r}: {e}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"service CIDR {cidr!r}: must be IPv4")
    if network.prefixlen > 28:
        raise ValueError(f"service CIDR {cidr!r}: too small, at most /28 "
                         f"(its {DNS_OFFSET}th address is the cluster DNS)")
    return network


def cluster_dns_address(cidr: str = DEFAULT_SERVICE_CIDR) -> str:
    """The cluster DNS address of the service network `cidr` (10.96.0.10)."""
    return str(service_network(cidr).network_address + DNS_OFFSET)


def _key(service: service_pb2.Service) -> Key:
    return Key("Service", scope("Service", service.metadata.namespace), service.metadata.name)


def _named(key: Key) -> str:
    return f"Service {key.namespace}/{key.name}"


class _Hold(NamedTuple):
    owner: Key
    until: float
    # For a node port: the Service port it was picked for ("80/TCP").
    tag: str = ""


class ServiceAllocator:
    def __init__(self, stored: Callable[[], Iterable[service_pb2.Service]],
                 service_cidr: str = DEFAULT_SERVICE_CIDR,
                 node_ports: tuple[int, int] = NODE_PORT_RANGE,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.network = service_network(service_cidr)
        self.dns = self.network.network_address + DNS_OFFSET
        self.node_ports = node_ports
        self._stored = stored
        self._rng = rng or random.Random()
        self._clock = clock
        self._lock = threading.Lock()
        self._ips: dict[str, _Hold] = {}
        self._ports: dict[tuple[int, str], _Hold] = {}

    # --- the API -----------------------------------------------------------

    def assign(self, service: service_pb2.Service,
               old: service_pb2.Service | None = None) -> None:
        """Fills `service`'s cluster IP and node ports (an update of `old`
        keeps what `old` had); Invalid naming each field that cannot be had."""
        with self._lock:
            self._assign(service, old)

    def release(self, key: Key) -> None:
        """Drops what is held for `key` (its Service was deleted)."""
        with self._lock:
            self._ips = {ip: h for ip, h in self._ips.items() if h.owner != key}
            self._ports = {port: h for port, h in self._ports.items() if h.owner != key}

    @staticmethod
    def drop_type_dependent(spec: service_pb2.ServiceSpec,
                            old: service_pb2.ServiceSpec) -> None:
        """A type change to ClusterIP gives back the node ports `old` had and
        drops its externalTrafficPolicy (an Update sends them back unchanged;
        they would be refused for ClusterIP), as Kubernetes does."""
        if spec.type in NODE_PORT_TYPES or old.type not in NODE_PORT_TYPES:
            return
        if spec.external_traffic_policy == old.external_traffic_policy:
            spec.external_traffic_policy = ""
        had = {(p.node_port, p.protocol or "TCP") for p in old.ports if p.node_port}
        for port in spec.ports:
            if (port.node_port, port.protocol or "TCP") in had:
                port.node_port = 0

    # --- inside the lock ---------------------------------------------------

    def _assign(self, service: service_pb2.Service, old: service_pb2.Service | None) -> None:
        key = _key(service)
        ips: dict[str, Key] = {}
        ports: dict[tuple[int, str], Key] = {}
        for other in self._stored():
            other_key = _key(other)
            if other.spec.cluster_ip and other.spec.cluster_ip != "None":
                ips[other.spec.cluster_ip] = other_key
            for port in other.spec.ports:
                if port.node_port:
                    ports[(port.node_port, port.protocol or "TCP")] = other_key
        self._forget_stale(ips, ports)
        # What this Service has (an update) is not taken from it.
        ips = {ip: owner for ip, owner in ips.items() if owner != key}
        ports = {port: owner for port, owner in ports.items() if owner != key}
        errors: list[FieldError] = []
        new_ips: dict[str, _Hold] = {}
        new_ports: dict[tuple[int, str], _Hold] = {}
        until = self._clock() + HOLD_SECONDS
        ip = self._cluster_ip(service, old, key, ips, errors)
        if ip:
            new_ips[ip] = _Hold(key, until)
        if service.spec.type in NODE_PORT_TYPES:
            self._node_ports(service, old, key, ports, errors, new_ports, until)
        if errors:
            raise Invalid(errors[0].field, errors[0].message, errors)
        self._ips.update(new_ips)
        self._ports.update(new_ports)

    def _forget_stale(self, ips: dict[str, Key], ports: dict[tuple[int, str], Key]) -> None:
        """Holds that expired or whose value is now stored (the store says who has it)."""
        now = self._clock()
        for ip, hold in list(self._ips.items()):
            if hold.until <= now or ip in ips:
                del self._ips[ip]
        for port, hold in list(self._ports.items()):
            if hold.until <= now or port in ports:
                del self._ports[port]

    def _cluster_ip(self, service: service_pb2.Service, old: service_pb2.Service | None,
                    key: Key, taken: dict[str, Key], errors: list[FieldError]) -> str:
        """Sets the cluster IP; returns a newly taken address ("" if none)."""
        spec = service.spec
        if len(spec.cluster_ips) > 1:
            errors.append(FieldError("spec.clusterIPs", "at most one address: the service "
                                     "network is IPv4 only"))
            return ""
        wanted = spec.cluster_ip or (spec.cluster_ips[0] if spec.cluster_ips else "")
        kept = old is not None and wanted and wanted == old.spec.cluster_ip
        if wanted == "None" or kept:
            spec.cluster_ip = wanted
            spec.cluster_ips[:] = [wanted]
            return ""
        if wanted:
            why = self._why_not_ip(wanted, key, taken)
            if why:
                errors.append(FieldError("spec.clusterIP", why))
                return ""
            ip = wanted
        else:
            ip = self._pick_ip(key, taken)
        spec.cluster_ip = ip
        spec.cluster_ips[:] = [ip]
        return ip

    def _why_not_ip(self, wanted: str, key: Key, taken: dict[str, Key]) -> str:
        try:
            address = ipaddress.ip_address(wanted)
        except ValueError:
            return f'"{wanted}" is not an IP address'
        if address not in self.network:
            return f"{wanted} is outside the service network {self.network}"
        if address == self.network.network_address:
            return f"{wanted} is the service network's own address"
        if address == self.network.broadcast_address:
            return f"{wanted} is the service network's broadcast address"
        if address == self.dns:
            return f"{wanted} is reserved for the cluster DNS"
        owner = taken.get(wanted)
        hold = self._ips.get(wanted)
        if owner is None and hold is not None and hold.owner != key:
            owner = hold.owner
        if owner is not None:
            return f"{wanted} is already allocated to {_named(owner)}"
        return ""

    def _pick_ip(self, key: Key, taken: dict[str, Key]) -> str:
        for ip, hold in self._ips.items():
            if hold.owner == key and ip not in taken:
                return ip  # held for this Service already (its dry run)
        base = int(self.network.network_address)
        size = self.network.num_addresses
        start = self._rng.randrange(1, size - 1)
        for step in range(size - 2):
            offset = 1 + (start - 1 + step) % (size - 2)
            if offset == DNS_OFFSET:
                continue
            ip = str(ipaddress.IPv4Address(base + offset))
            if ip not in taken and ip not in self._ips:
                return ip
        raise Precondition(f"spec.clusterIP: no free address left in the service network "
                           f"{self.network}")

    def _node_ports(self, service: service_pb2.Service, old: service_pb2.Service | None,
                    key: Key, taken: dict[tuple[int, str], Key], errors: list[FieldError],
                    new: dict[tuple[int, str], _Hold], until: float) -> None:
        had = set() if old is None else {(p.node_port, p.protocol or "TCP")
                                         for p in old.spec.ports if p.node_port}
        low, high = self.node_ports
        for i, port in enumerate(service.spec.ports):
            protocol = port.protocol or "TCP"
            tag = f"{port.port}/{protocol}"
            wanted = (port.node_port, protocol)
            if port.node_port and wanted in had:
                continue
            if port.node_port:
                owner = taken.get(wanted)
                hold = self._ports.get(wanted)
                if owner is None and hold is not None and hold.owner != key:
                    owner = hold.owner
                if owner is None and wanted in new:
                    continue  # validation reports a port given twice
                if owner is not None:
                    errors.append(FieldError(
                        f"spec.ports[{i}].nodePort",
                        f"{port.node_port}/{protocol}: provided port is already allocated "
                        f"to {_named(owner)}"))
                    continue
                new[wanted] = _Hold(key, until, tag)
                continue
            # Numbers in use under any protocol are skipped: one port, one Service.
            busy = {number for number, _ in (*taken, *new)}
            busy.update(number for (number, _), hold in self._ports.items()
                        if hold.owner != key)
            busy.update(p.node_port for p in service.spec.ports if p.node_port)
            number = self._pick_port(key, tag, protocol, busy, low, high)
            port.node_port = number
            new[(number, protocol)] = _Hold(key, until, tag)

    def _pick_port(self, key: Key, tag: str, protocol: str, busy: set[int],
                   low: int, high: int) -> int:
        mine = {number for (number, _), hold in self._ports.items() if hold.owner == key}
        for (number, proto), hold in self._ports.items():
            if hold.owner == key and hold.tag == tag and proto == protocol \
                    and number not in busy:
                return number  # held for this Service's port already (its dry run)
        size = high - low + 1
        start = self._rng.randrange(size)
        for step in range(size):
            number = low + (start + step) % size
            if number not in busy and number not in mine:
                return number
        raise Precondition(f"spec.ports: no free node port left in {low}-{high}")
