"""The node's status: capacity and allocatable, pressure conditions, addresses, the
agent endpoint, node info; transition times kept while a condition holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.node import (
    HostFacts,
    NodeSettings,
    agent_endpoint,
    conditions_of,
    default_route_address,
    node_status,
    read_host,
)
from proto.podium.v1 import node_pb2

GI = 1024 ** 3
MI = 1024 ** 2
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def facts(**changes: object) -> HostFacts:
    base = HostFacts(cpus=2, memory_total=4 * GI, memory_available=3 * GI,
                     disk_total=100 * GI, disk_free=50 * GI, pid_max=32768, processes=100,
                     hostname="node-1", internal_ip="192.0.2.10", kernel_version="6.1.0",
                     os_image="Debian GNU/Linux 12 (bookworm)", architecture="amd64",
                     machine_id="m1", boot_id="b1", cgroup_version="v1")
    return base._replace(**changes)  # type: ignore[arg-type]


def status(f: HostFacts | None = None, **kw: object) -> node_pb2.NodeStatus:
    return node_status(f or facts(), endpoint=agent_endpoint("0.0.0.0:7401"),
                       now=NOW, **kw)  # type: ignore[arg-type]


def condition(s: node_pb2.NodeStatus, kind: str) -> node_pb2.NodeCondition:
    return next(c for c in s.conditions if c.type == kind)


def test_capacity_and_allocatable_are_kubernetes_quantities() -> None:
    s = status()
    assert dict(s.capacity) == {"cpu": "2", "memory": f"{4 * GI // 1024}Ki", "pods": "110"}
    assert dict(s.allocatable) == {"cpu": "1900m", "memory": f"{(4 * GI - 256 * MI) // 1024}Ki",
                                   "pods": "110"}


def test_the_reserve_is_configurable() -> None:
    settings = NodeSettings(reserved_milli_cpu=1000, reserved_memory=0, max_pods=20)
    s = status(settings=settings)
    assert dict(s.allocatable) == {"cpu": "1", "memory": f"{4 * GI // 1024}Ki", "pods": "20"}
    assert s.capacity["pods"] == "20"


def test_healthy_node_conditions() -> None:
    s = status()
    assert conditions_of(s) == (("Ready", "True"), ("MemoryPressure", "False"),
                                ("DiskPressure", "False"), ("PIDPressure", "False"))
    ready = condition(s, "Ready")
    assert ready.reason == "AgentReady"
    assert ready.last_heartbeat_time.ToDatetime(UTC) == NOW
    assert ready.last_transition_time.ToDatetime(UTC) == NOW


def test_pressure_conditions_follow_the_thresholds() -> None:
    s = status(facts(memory_available=99 * MI, disk_free=9 * GI, processes=32000))
    assert condition(s, "MemoryPressure").status == "True"
    assert condition(s, "MemoryPressure").reason == "AgentHasInsufficientMemory"
    assert condition(s, "DiskPressure").status == "True"
    assert "9% free" in condition(s, "DiskPressure").message
    assert condition(s, "PIDPressure").status == "True"
    just_enough = status(facts(memory_available=100 * MI, disk_free=10 * GI))
    assert condition(just_enough, "MemoryPressure").status == "False"
    assert condition(just_enough, "DiskPressure").status == "False"


def test_not_ready_says_why() -> None:
    s = status(ready=False, ready_message="the pod loop is stalled")
    ready = condition(s, "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "AgentNotReady",
                                                           "the pod loop is stalled")


def test_transition_time_kept_while_the_condition_holds() -> None:
    first = status()
    later = NOW + timedelta(seconds=30)
    same = node_status(facts(), endpoint=agent_endpoint(":7401"), previous=first, now=later)
    assert condition(same, "Ready").last_transition_time.ToDatetime(UTC) == NOW
    assert condition(same, "Ready").last_heartbeat_time.ToDatetime(UTC) == later
    flipped = node_status(facts(memory_available=MI), endpoint=agent_endpoint(":7401"),
                          previous=first, now=later)
    assert condition(flipped, "MemoryPressure").last_transition_time.ToDatetime(UTC) == later
    assert condition(flipped, "Ready").last_transition_time.ToDatetime(UTC) == NOW


def test_addresses_endpoint_and_node_info() -> None:
    s = status()
    assert [(a.type, a.address) for a in s.addresses] == [("InternalIP", "192.0.2.10"),
                                                         ("Hostname", "node-1")]
    assert s.daemon_endpoints.agent_endpoint == node_pb2.DaemonEndpoint(port=7401)
    info = s.node_info
    assert (info.kernel_version, info.os_image, info.operating_system, info.architecture,
            info.machine_id, info.boot_id, info.cgroup_version) == (
        "6.1.0", "Debian GNU/Linux 12 (bookworm)", "linux", "amd64", "m1", "b1", "v1")
    assert info.podium_version
    assert info.container_runtime_version == f"podium://{info.podium_version}"


def test_no_internal_ip_without_an_address() -> None:
    s = status(facts(internal_ip=""))
    assert [a.type for a in s.addresses] == ["Hostname"]


def test_agent_endpoint_from_listen() -> None:
    assert agent_endpoint("0.0.0.0:7401") == node_pb2.DaemonEndpoint(port=7401)
    assert agent_endpoint("[::]:7401") == node_pb2.DaemonEndpoint(port=7401)
    assert agent_endpoint("10.0.0.5:7401") == node_pb2.DaemonEndpoint(port=7401,
                                                                      address="10.0.0.5")
    assert agent_endpoint("127.0.0.1:0", port=40123).port == 40123
    assert agent_endpoint("unix:/run/podium/agent.sock") == node_pb2.DaemonEndpoint(
        address="unix:/run/podium/agent.sock")


def test_default_route_address_reads_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
        "lo\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    # The default route leaves by lo, which has only loopback addresses: the first
    # other IPv4 address of the host, or "" — never a loopback one.
    assert not default_route_address(table).startswith("127.")
    assert not default_route_address(tmp_path / "absent").startswith("127.")


def test_read_host_reads_this_machine(tmp_path: Path) -> None:
    f = read_host(tmp_path / "not-made-yet", node_ip="198.51.100.4")
    assert f.cpus >= 1 and f.memory_total > 0 and f.disk_total > 0
    assert f.internal_ip == "198.51.100.4"
    assert f.cgroup_version in ("v1", "v2")
    assert f.processes > 0 and f.pid_max > f.processes
    assert status(f).node_info.os_image
