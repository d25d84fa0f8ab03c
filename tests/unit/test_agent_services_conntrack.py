"""Stale UDP flows: which endpoints left (rules.stale_udp_flows), which conntrack
entries go (conntrack.is_stale), and when ServiceProxy.sync clears them."""

from __future__ import annotations

import logging
import socket
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.errors import NetworkError
from agent.services import (
    Endpoint,
    Flow,
    PortRule,
    ProxySettings,
    ServiceProxy,
    StaleFlows,
    catalog_of,
    is_stale,
    stale_udp_flows,
)
from agent.services import proxy as proxy_module
from agent.services.conntrack import flow_of, flush_stale_flows
from proto.podium.v1 import service_pb2

A, B, C = (Endpoint(IPv4Address(f"10.88.1.{i}"), 5353) for i in (2, 3, 4))
VIP = IPv4Address("10.96.0.53")


def rule(key: str = "default/dns/udp/53", protocol: str = "udp",
         endpoints: tuple[Endpoint, ...] = (A, B), node_port: int = 0,
         external: tuple[IPv4Address, ...] = ()) -> PortRule:
    return PortRule(key=key, protocol=protocol, port=53, cluster_ips=(VIP,),
                    external_ips=external, node_port=node_port, endpoints=endpoints,
                    affinity=None)


# --- which endpoints left ------------------------------------------------------------


def test_nothing_is_stale_on_the_first_sync() -> None:
    assert stale_udp_flows(None, [rule(endpoints=(B,))]) == ()


def test_an_endpoint_leaving_a_udp_port_is_stale_with_that_ports_frontends() -> None:
    ext = IPv4Address("192.0.2.9")
    before = [rule(endpoints=(A, B), node_port=30053, external=(ext,))]
    after = [rule(endpoints=(B, C), node_port=30053, external=(ext,))]
    assert stale_udp_flows(before, after) == (StaleFlows(A, (VIP, ext), 53, 30053),)


def test_unchanged_or_added_endpoints_and_tcp_ports_are_never_stale() -> None:
    assert stale_udp_flows([rule()], [rule()]) == ()
    assert stale_udp_flows([rule(endpoints=(A,))], [rule(endpoints=(A, B))]) == ()
    tcp = "default/web/tcp/53"
    assert stale_udp_flows([rule(tcp, "tcp")], [rule(tcp, "tcp", endpoints=())]) == ()


def test_a_service_gone_or_left_without_endpoints_takes_all_of_its_own() -> None:
    assert stale_udp_flows([rule()], []) == (StaleFlows(A, (VIP,), 53, 0),
                                             StaleFlows(B, (VIP,), 53, 0))
    assert len(stale_udp_flows([rule()], [rule(endpoints=())])) == 2


def test_an_endpoint_leaving_one_service_but_serving_another_is_stale_for_that_one() -> None:
    other = "default/other/udp/53"
    before = [rule(), rule(other, endpoints=(A,))]
    after = [rule(endpoints=(B,)), rule(other, endpoints=(A,))]
    assert stale_udp_flows(before, after) == (StaleFlows(A, (VIP,), 53, 0),)


def test_a_port_changing_makes_the_old_one_stale() -> None:
    moved = Endpoint(A.ip, 5354)
    assert stale_udp_flows([rule(endpoints=(A,))], [rule(endpoints=(moved,))]) == (
        StaleFlows(A, (VIP,), 53, 0),)


# --- which conntrack entries go ------------------------------------------------------


def flow(destination: str, port: int, replier: str, replier_port: int) -> Flow:
    return Flow(IPv4Address(destination), port, IPv4Address(replier), replier_port)


STALE = (StaleFlows(A, (VIP,), 53, 30053),)


def test_a_flow_dnated_through_the_port_to_the_endpoint_is_stale() -> None:
    assert is_stale(flow("10.96.0.53", 53, "10.88.1.2", 5353), STALE)
    # Through the NodePort, on whatever node address it came to.
    assert is_stale(flow("10.99.0.1", 30053, "10.88.1.2", 5353), STALE)


@pytest.mark.parametrize("the_flow", [
    flow("10.88.1.2", 5353, "10.88.1.2", 5353),  # straight to the pod: no DNAT
    flow("10.96.0.53", 53, "10.88.1.3", 5353),  # another endpoint
    flow("10.96.0.53", 53, "10.88.1.2", 9999),  # another port of the pod
    flow("10.96.0.54", 53, "10.88.1.2", 5353),  # another Service's address
    flow("10.96.0.53", 54, "10.88.1.2", 5353),  # another Service port
])
def test_other_flows_stay(the_flow: Flow) -> None:
    assert not is_stale(the_flow, STALE)


def test_no_node_port_matches_no_port_zero() -> None:
    assert not is_stale(flow("10.99.0.1", 0, "10.88.1.2", 5353),
                        (StaleFlows(A, (VIP,), 53, 0),))


def entry(proto: int, daddr: Any, dport: Any, saddr: Any, sport: Any,
          family: int = socket.AF_INET) -> Any:
    return SimpleNamespace(
        tuple_orig=SimpleNamespace(proto=proto, family=family, daddr=daddr, dport=dport),
        tuple_reply=SimpleNamespace(saddr=saddr, sport=sport))


def test_a_conntrack_entry_reads_as_a_flow() -> None:
    assert flow_of(entry(socket.IPPROTO_UDP, "10.96.0.53", 53, "10.88.1.2", 5353)) == \
        flow("10.96.0.53", 53, "10.88.1.2", 5353)
    assert flow_of(entry(socket.IPPROTO_TCP, "10.96.0.53", 53, "10.88.1.2", 5353)) is None
    assert flow_of(entry(socket.IPPROTO_UDP, "fd00::1", 53, "fd00::2", 5353,
                         socket.AF_INET6)) is None
    assert flow_of(entry(socket.IPPROTO_UDP, None, None, "10.88.1.2", 5353)) is None


def test_nothing_stale_touches_no_conntrack() -> None:
    assert flush_stale_flows((), Path("/nonexistent/netns")) == 0


# --- when the proxy clears them ------------------------------------------------------


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[tuple[StaleFlows, ...], Path | None]] = []
        self.fail = fail

    def __call__(self, stale: Sequence[StaleFlows], netns: Path | None) -> int:
        self.calls.append((tuple(stale), netns))
        if self.fail is not None:
            raise self.fail
        return len(stale)


@pytest.fixture
def nft(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """nft as the proxy calls it, answering that no table exists yet."""
    calls: list[list[str]] = []

    def fake(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 1 if "list" in args else 0, "", "")

    monkeypatch.setattr(proxy_module, "run_nft", fake)
    return calls


def udp_catalog(*ips: str) -> Any:
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = "dns", "default"
    svc.spec.cluster_ip, svc.spec.type = str(VIP), "ClusterIP"
    svc.spec.ports.add(name="dns", port=53, protocol="UDP")
    eps = service_pb2.Endpoints()
    eps.metadata.name, eps.metadata.namespace = "dns", "default"
    subset = eps.subsets.add()
    for ip in ips:
        subset.addresses.add(ip=ip)
    subset.ports.add(name="dns", port=5353, protocol="UDP")
    return catalog_of([svc], [eps], [])


def test_sync_clears_the_flows_of_endpoints_that_left_after_the_rules(
        nft: list[list[str]]) -> None:
    flusher = Recorder()
    netns = Path("/run/ptnode")
    proxy = ServiceProxy(ProxySettings(table="ptsvc"), netns, flush_flows=flusher)

    assert proxy.sync(udp_catalog("10.88.1.2", "10.88.1.3"))
    assert flusher.calls == []  # the first sync since start: nothing known to clear
    assert proxy.sync(udp_catalog("10.88.1.3"))
    assert flusher.calls == [((StaleFlows(A, (VIP,), 53, 0),), netns)]
    assert nft[-1][:2] == ["-f", "-"]  # the rules were written before the flush

    assert proxy.sync(udp_catalog("10.88.1.3", "10.88.1.4"))  # one came: nothing left
    assert len(flusher.calls) == 1


def test_after_close_the_next_sync_is_a_first_one(nft: list[list[str]]) -> None:
    flusher = Recorder()
    proxy = ServiceProxy(ProxySettings(table="ptsvc"), flush_flows=flusher)
    proxy.sync(udp_catalog("10.88.1.2"))
    proxy.close()
    proxy.sync(udp_catalog())
    assert flusher.calls == []


def test_a_failing_flush_is_logged_once_and_never_fails_the_sync(
        nft: list[list[str]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "podium.agent.services")
    flusher = Recorder(NetworkError("conntrack in the node's namespace: Operation not "
                                    "supported"))
    proxy = ServiceProxy(ProxySettings(table="ptsvc"), flush_flows=flusher)
    proxy.sync(udp_catalog("10.88.1.2", "10.88.1.3", "10.88.1.4"))

    assert proxy.sync(udp_catalog("10.88.1.3", "10.88.1.4"))
    assert proxy.sync(udp_catalog("10.88.1.4"))
    assert len(flusher.calls) == 2
    assert caplog.text.count("conntrack in the node's namespace: Operation not supported") == 1
