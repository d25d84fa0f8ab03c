"""The node as the scheduler sees it: ``node_status`` builds a ``NodeStatus``.

Two steps, so the decisions are testable without a host: ``read_host`` takes the
figures (psutil, ``/proc``, ``/etc``), and ``node_status`` turns them into the
status — pure, given the figures, the settings and the previous status.

    capacity     cpu (cores), memory (``Ki``, as the kubelet writes it), pods
    allocatable  capacity minus what the node keeps for itself (``NodeSettings``)
    conditions   Ready (the agent works), MemoryPressure (available memory under a
                 floor), DiskPressure (free space under the state root under a
                 fraction), PIDPressure (free process ids under a fraction)
    addresses    InternalIP (``--node-ip``, else the address of the default route's
                 interface), Hostname
    daemon_endpoints.agent_endpoint   where AgentService listens (``--listen``)
    node_info    kernel, OS image, architecture, versions, cgroup version, ids
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import psutil
from google.protobuf.timestamp_pb2 import Timestamp

from proto.podium.v1 import node_pb2

__all__ = [
    "HostFacts",
    "NodeSettings",
    "agent_endpoint",
    "conditions_of",
    "default_route_address",
    "node_status",
    "read_host",
]

MI = 1024 * 1024
# Kubernetes' default for the kubelet's --max-pods.
DEFAULT_MAX_PODS = 110
# Kubernetes names the machine's architectures as Go does.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
                  "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@dataclass(frozen=True)
class NodeSettings:
    """What the node keeps for itself, and where pressure starts."""

    reserved_milli_cpu: int = 100
    reserved_memory: int = 256 * MI
    max_pods: int = DEFAULT_MAX_PODS
    memory_pressure_below: int = 100 * MI  # bytes available
    disk_pressure_below: float = 0.10  # fraction of the state root's filesystem free
    pid_pressure_below: float = 0.05  # fraction of pid_max free


class HostFacts(NamedTuple):
    """The figures a status is made of, read once (``read_host``)."""

    cpus: int
    memory_total: int
    memory_available: int
    disk_total: int
    disk_free: int
    pid_max: int
    processes: int
    hostname: str
    internal_ip: str  # "" when the host has no default route and no address
    kernel_version: str
    os_image: str
    architecture: str
    machine_id: str
    boot_id: str
    cgroup_version: str  # "v1" or "v2"


def read_host(state_root: Path, node_ip: str = "") -> HostFacts:
    """The host's figures now. ``node_ip`` wins over the default route's address."""
    memory = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(str(_existing(state_root)))
        disk_total, disk_free = disk.total, disk.free
    except OSError:
        disk_total = disk_free = 0
    return HostFacts(
        cpus=psutil.cpu_count() or 1,
        memory_total=memory.total, memory_available=memory.available,
        disk_total=disk_total, disk_free=disk_free,
        pid_max=_read_int(Path("/proc/sys/kernel/pid_max"), 32768),
        processes=len(psutil.pids()),
        hostname=socket.gethostname(),
        internal_ip=node_ip or default_route_address(),
        kernel_version=platform.release(),
        os_image=_os_image(Path("/etc/os-release")),
        architecture=_ARCHITECTURES.get(platform.machine(), platform.machine()),
        machine_id=_read_text(Path("/etc/machine-id")),
        boot_id=_read_text(Path("/proc/sys/kernel/random/boot_id")),
        cgroup_version=_cgroup_version())


def node_status(facts: HostFacts, *, endpoint: node_pb2.DaemonEndpoint,
                settings: NodeSettings = NodeSettings(), ready: bool = True,
                ready_message: str = "", previous: node_pb2.NodeStatus | None = None,
                now: datetime | None = None) -> node_pb2.NodeStatus:
    """The node's status from ``facts``.

    ``previous`` (the status last sent) keeps each condition's last_transition_time
    while its status stays the same; ``now`` is the heartbeat time (tests pin it).
    """
    when = now or datetime.now(UTC)
    status = node_pb2.NodeStatus()
    milli_cpu = facts.cpus * 1000
    status.capacity.update(cpu=_cpu(milli_cpu), memory=_ki(facts.memory_total),
                           pods=str(settings.max_pods))
    status.allocatable.update(
        cpu=_cpu(max(0, milli_cpu - settings.reserved_milli_cpu)),
        memory=_ki(max(0, facts.memory_total - settings.reserved_memory)),
        pods=str(settings.max_pods))
    memory_low = facts.memory_available < settings.memory_pressure_below
    disk_low = (facts.disk_total > 0
                and facts.disk_free < facts.disk_total * settings.disk_pressure_below)
    pids_low = facts.pid_max - facts.processes < facts.pid_max * settings.pid_pressure_below
    conditions = [
        ("Ready", ready, "AgentReady" if ready else "AgentNotReady",
         ready_message or ("podium-agent is running pods" if ready
                           else "podium-agent is not running pods")),
        ("MemoryPressure", memory_low,
         "AgentHasInsufficientMemory" if memory_low else "AgentHasSufficientMemory",
         f"{facts.memory_available // MI}Mi available"),
        ("DiskPressure", disk_low,
         "AgentHasDiskPressure" if disk_low else "AgentHasNoDiskPressure",
         f"{_percent(facts.disk_free, facts.disk_total)} free under the state root"),
        ("PIDPressure", pids_low,
         "AgentHasInsufficientPID" if pids_low else "AgentHasSufficientPID",
         f"{facts.processes} of {facts.pid_max} process ids in use"),
    ]
    before = {c.type: c for c in previous.conditions} if previous is not None else {}
    for kind, value, reason, message in conditions:
        text = "True" if value else "False"
        cond = status.conditions.add(type=kind, status=text, reason=reason, message=message)
        cond.last_heartbeat_time.CopyFrom(_timestamp(when))
        old = before.get(kind)
        if old is not None and old.status == text and old.HasField("last_transition_time"):
            cond.last_transition_time.CopyFrom(old.last_transition_time)
        else:
            cond.last_transition_time.CopyFrom(_timestamp(when))
    if facts.internal_ip:
        status.addresses.add(type="InternalIP", address=facts.internal_ip)
    status.addresses.add(type="Hostname", address=facts.hostname)
    status.daemon_endpoints.agent_endpoint.CopyFrom(endpoint)
    version = _podium_version()
    status.node_info.CopyFrom(node_pb2.NodeSystemInfo(
        machine_id=facts.machine_id, boot_id=facts.boot_id,
        kernel_version=facts.kernel_version, os_image=facts.os_image,
        operating_system="linux", architecture=facts.architecture,
        podium_version=version, container_runtime_version=f"podium://{version}",
        cgroup_version=facts.cgroup_version))
    return status


def agent_endpoint(listen: str, port: int = 0) -> node_pb2.DaemonEndpoint:
    """Where the scheduler dials the agent, from ``--listen`` (``host:port``,
    ``[v6]:port`` or ``unix:PATH``); ``port`` is the bound port when ``listen`` says 0.

    A wildcard host is left empty: the scheduler then dials the node's InternalIP.
    """
    if listen.startswith("unix:"):
        return node_pb2.DaemonEndpoint(address=listen)
    host, _, text = listen.rpartition(":")
    host = host.strip("[]")
    try:
        wanted = int(text)
    except ValueError:
        raise ValueError(f"--listen {listen!r}: the port is not a number") from None
    if host in ("", "0.0.0.0", "::"):
        host = ""
    return node_pb2.DaemonEndpoint(port=port or wanted, address=host)


def default_route_address(route_table: Path = Path("/proc/net/route")) -> str:
    """The IPv4 address of the interface the default route leaves by; else the first
    non-loopback IPv4 address of any interface; else ""."""
    interface = ""
    try:
        for line in route_table.read_text().splitlines()[1:]:
            fields = line.split()
            # Destination 00000000 with mask 00000000 is the default route.
            if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                interface = fields[0]
                break
    except OSError:
        pass
    addresses = psutil.net_if_addrs()
    names = [interface] if interface in addresses else []
    names += [n for n in sorted(addresses) if n != interface]
    for name in names:
        for addr in addresses[name]:
            if addr.family == socket.AF_INET and not addr.address.startswith("127."):
                return str(addr.address)
    return ""


def conditions_of(status: node_pb2.NodeStatus) -> tuple[tuple[str, str], ...]:
    """(type, status) of every condition: what a change of is news for the scheduler."""
    return tuple((c.type, c.status) for c in status.conditions)


# --- helpers ----------------------------------------------------------------------

def _cpu(milli: int) -> str:
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _ki(size: int) -> str:
    return f"{size // 1024}Ki"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part // whole}%" if whole else "unknown"


def _timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _existing(path: Path) -> Path:
    # Before the agent made its state root, the nearest existing parent is on the
    # filesystem the root will be on.
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def _os_image(path: Path) -> str:
    """PRETTY_NAME from os-release, as Kubernetes shows it."""
    values = _os_release(_read_text(path).splitlines())
    return values.get("PRETTY_NAME") or values.get("NAME") or "Linux"


def _os_release(lines: Iterable[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


# Both are read once per process: the cgroup layout and the installed podium do not
# change under a running agent, and each read costs milliseconds (the mount table,
# the installed distributions), which a heartbeat a second would pay every time.
@functools.cache
def _cgroup_version() -> str:
    from runtime.cgroups import cgroup_version

    try:
        return f"v{cgroup_version()}"
    except OSError:
        return ""


@functools.cache
def _podium_version() -> str:
    try:
        return importlib.metadata.version("podium")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
