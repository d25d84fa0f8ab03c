"""A pod's resolv.conf by its dnsPolicy and dnsConfig, and the files behind it."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import NetworkError
from agent.network import NetworkConfig, PodNetwork
from agent.network.podfiles import (
    MAX_NAMESERVERS,
    MAX_SEARCH_CHARS,
    MAX_SEARCHES,
    DnsConfig,
    PodDns,
    node_dns,
    pod_dns,
    pod_resolver,
    resolv_conf_file,
    write_host_network_files,
)
from proto.podium.v1 import pod_pb2

CLUSTER_DNS = IPv4Address("10.96.0.10")
DOMAIN = "cluster.local"
NODE = DnsConfig(("192.0.2.53", "192.0.2.54"), ("corp.test",), ("timeout:2",))


def resolver(pod: PodDns, cluster_dns: IPv4Address | None = CLUSTER_DNS) -> DnsConfig:
    return pod_resolver(pod, NODE, cluster_dns, DOMAIN)


def test_cluster_first_names_the_cluster_dns_and_searches_the_namespace() -> None:
    dns = resolver(PodDns("prod"))
    assert dns == DnsConfig(
        ("10.96.0.10",),
        ("prod.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.test"),
        ("ndots:5",))
    assert resolv_conf_file(dns) == (
        "nameserver 10.96.0.10\n"
        "search prod.svc.cluster.local svc.cluster.local cluster.local corp.test\n"
        "options ndots:5\n")
    assert resolver(PodDns("prod", "")) == dns  # no policy is ClusterFirst


def test_cluster_first_without_a_cluster_dns_is_the_nodes_resolvers() -> None:
    assert resolver(PodDns("prod"), cluster_dns=None) == NODE


def test_host_network_cluster_first_is_the_nodes_and_with_host_net_the_clusters() -> None:
    assert resolver(PodDns("prod", "ClusterFirst", host_network=True)) == NODE
    dns = resolver(PodDns("prod", "ClusterFirstWithHostNet", host_network=True))
    assert dns.nameservers == ("10.96.0.10",) and dns.searches[0] == "prod.svc.cluster.local"
    # Without a cluster DNS every cluster policy falls back to the node's.
    assert resolver(PodDns("prod", "ClusterFirstWithHostNet"), cluster_dns=None) == NODE


def test_default_is_the_nodes_resolvers_whatever_the_cluster() -> None:
    assert resolver(PodDns("prod", "Default")) == NODE
    assert resolver(PodDns("prod", "Default", host_network=True)) == NODE


def test_none_is_only_the_pods_dns_config() -> None:
    own = DnsConfig(("192.0.2.1",), ("a.test",), ("ndots:1",))
    assert resolver(PodDns("prod", "None", config=own)) == own
    assert resolver(PodDns("prod", "None")) == DnsConfig()


def test_dns_config_is_appended_without_repeats_and_options_merge_by_name() -> None:
    extra = DnsConfig(("192.0.2.99", "10.96.0.10"), ("corp.test", "b.test"),
                      ("ndots:2", "edns0", "timeout"))
    dns = resolver(PodDns("prod", config=extra))
    assert dns.nameservers == ("10.96.0.10", "192.0.2.99")
    assert dns.searches == ("prod.svc.cluster.local", "svc.cluster.local", "cluster.local",
                            "corp.test", "b.test")
    assert dns.options == ("ndots:2", "edns0", "timeout")  # the pod's ndots wins
    node = resolver(PodDns("prod", "Default", config=extra))
    assert node.options == ("timeout", "ndots:2", "edns0")  # the node's timeout:2 replaced


def test_at_most_three_nameservers_and_32_search_domains() -> None:
    many = DnsConfig(tuple(f"192.0.2.{i}" for i in range(1, 6)),
                     tuple(f"d{i}.test" for i in range(40)))
    dns = resolver(PodDns("prod", config=many))
    assert len(dns.nameservers) == MAX_NAMESERVERS == 3
    assert dns.nameservers == ("10.96.0.10", "192.0.2.1", "192.0.2.2")
    assert len(dns.searches) == MAX_SEARCHES == 32
    assert dns.searches[:3] == ("prod.svc.cluster.local", "svc.cluster.local",
                                "cluster.local")


def test_the_search_line_is_kept_within_its_length() -> None:
    long = DnsConfig(searches=tuple(f"{'x' * 200}.d{i}.test" for i in range(20)))
    dns = resolver(PodDns("prod", config=long))
    assert len(" ".join(dns.searches)) <= MAX_SEARCH_CHARS
    kept = len(dns.searches) - 4  # after the three cluster domains and corp.test
    assert 0 < kept < len(long.searches)
    # Cut no more than needed: the next one would not have fit.
    assert len(" ".join(dns.searches + (long.searches[kept],))) > MAX_SEARCH_CHARS


@given(st.sampled_from(["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]),
       st.booleans(), st.booleans(),
       st.lists(st.sampled_from(["192.0.2.1", "192.0.2.2", "10.96.0.10", "192.0.2.53"])),
       st.lists(st.sampled_from(["a.test", "corp.test", "cluster.local", "b.test"])))
def test_the_limits_hold_and_nothing_repeats(policy: str, host_network: bool,
                                             has_cluster_dns: bool, servers: list[str],
                                             searches: list[str]) -> None:
    pod = PodDns("ns", policy, host_network, DnsConfig(tuple(servers), tuple(searches)))
    dns = resolver(pod, CLUSTER_DNS if has_cluster_dns else None)
    assert len(dns.nameservers) <= 3 and len(set(dns.nameservers)) == len(dns.nameservers)
    assert len(set(dns.searches)) == len(dns.searches)
    assert len({o.split(":")[0] for o in dns.options}) == len(dns.options)
    cluster = dns.searches[:1] == ("ns.svc.cluster.local",)
    assert not cluster or dns.nameservers[0] == "10.96.0.10"
    expected_cluster = has_cluster_dns and (
        policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network))
    assert cluster == expected_cluster


def test_an_unknown_policy_is_an_error_naming_it() -> None:
    with pytest.raises(NetworkError, match="dnsPolicy 'Sometimes'"):
        resolver(PodDns("prod", "Sometimes"))


def test_pod_dns_reads_the_pods_spec() -> None:
    pod = json_format.ParseDict({
        "metadata": {"name": "p", "namespace": "prod"},
        "spec": {"hostNetwork": True, "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["192.0.2.1"], "searches": ["a.test"],
            "options": [{"name": "ndots", "value": "3"}, {"name": "rotate"}]}},
    }, pod_pb2.Pod())
    assert pod_dns(pod) == PodDns("prod", "None", True, DnsConfig(
        ("192.0.2.1",), ("a.test",), ("ndots:3", "rotate")))
    assert pod_dns(pod_pb2.Pod()) == PodDns("default", "ClusterFirst", False, DnsConfig())


def test_a_host_network_pod_may_use_the_nodes_loopback_stub() -> None:
    text = "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.test\n"
    assert node_dns(text).nameservers == ("192.0.2.53",)
    assert node_dns(text, keep_loopback=True).nameservers == ("127.0.0.53", "192.0.2.53")


def network(tmp_path: Path, cluster_dns: IPv4Address | None) -> PodNetwork:
    from ipaddress import IPv4Network

    (tmp_path / "resolv.conf").write_text(
        "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.test\n")
    return PodNetwork(NetworkConfig(
        pod_cidr=IPv4Network("10.88.7.0/24"), state_dir=tmp_path / "state",
        pods_dir=tmp_path / "pods", resolv_conf=tmp_path / "resolv.conf",
        cluster_dns=cluster_dns))


def test_the_node_network_applies_the_policy(tmp_path: Path) -> None:
    net = network(tmp_path, CLUSTER_DNS)
    assert net.pod_resolver(PodDns("prod")).nameservers == ("10.96.0.10",)
    assert net.pod_resolver(PodDns("prod", "Default")).nameservers == ("192.0.2.53",)
    standalone = network(tmp_path, None)
    assert standalone.pod_resolver(PodDns("prod")).nameservers == ("192.0.2.53",)


def test_host_network_files_are_the_nodes_with_the_policys_resolv_conf(
        tmp_path: Path) -> None:
    net = network(tmp_path, CLUSTER_DNS)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n192.0.2.8 node-a\n")
    files = net.host_network_files("uid-h", PodDns("prod"), node_hosts=hosts)
    assert files == tmp_path / "pods" / "uid-h" / "network"
    assert (files / "hosts").read_text() == hosts.read_text()
    assert (files / "hostname").read_text().strip()
    # ClusterFirst on the host's network: the node's resolvers, its loopback stub too.
    assert (files / "resolv.conf").read_text() == (
        "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch corp.test\n")
    net.host_network_files("uid-h", PodDns("prod", "ClusterFirstWithHostNet"),
                           node_hosts=tmp_path / "missing")
    assert (files / "resolv.conf").read_text().startswith("nameserver 10.96.0.10\n")
    assert "localhost" in (files / "hosts").read_text()


def test_write_host_network_files_writes_all_three(tmp_path: Path) -> None:
    write_host_network_files(tmp_path / "f", "127.0.0.1 localhost\n", "node-a",
                             DnsConfig(("192.0.2.53",)))
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "hostname", "hosts", "resolv.conf"]
    assert (tmp_path / "f" / "hostname").read_text() == "node-a\n"
