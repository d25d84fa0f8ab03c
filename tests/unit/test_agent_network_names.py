"""Names, settings, pod files and nftables rules of agent.network, without root."""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

import agent.network
from agent.errors import NetworkError, PortConflictError
from agent.network import (
    DnsConfig,
    NatTable,
    NetworkConfig,
    PortMapping,
    check_config,
    host_veth_name,
    node_dns,
    pod_hostname,
    port_mapping,
)
from agent.network.podfiles import hosts_file, resolv_conf_file, write_pod_files

CIDR = IPv4Network("10.88.3.0/24")


def test_public_names() -> None:
    for name in agent.network.__all__:
        assert hasattr(agent.network, name), name
    assert {"PodNetwork", "Sandbox", "NetworkConfig", "HostLocalIPAM", "NatTable",
            "enable_ip_forwarding"} <= set(agent.network.__all__)


def test_defaults() -> None:
    config = NetworkConfig(pod_cidr=CIDR)
    assert config.bridge == "podium0" and config.nft_table == "podium"
    assert config.node_netns is None
    assert agent.network.DEFAULT_POD_NETWORK == IPv4Network("10.88.0.0/16")
    check_config(config)


def test_host_veth_name_is_short_stable_and_distinct() -> None:
    name = host_veth_name("pd", "6f1c2a9e-0b7d-4c1e-9a55-3d2f0e1b7c44")
    assert name.startswith("pd") and len(name) == 12
    assert int(name[2:], 16) >= 0
    assert name == host_veth_name("pd", "6f1c2a9e-0b7d-4c1e-9a55-3d2f0e1b7c44")
    names = {host_veth_name("pd", f"pod-{i}") for i in range(2000)}
    assert len(names) == 2000
    assert len(host_veth_name("abcde", "x")) == 15


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bridge": "a-bridge-name-too-long"}, "bridge name"),
        ({"bridge": "br 0"}, "bridge name"),
        ({"veth_prefix": "toolong"}, "veth prefix"),
        ({"veth_prefix": ""}, "veth prefix"),
        ({"nft_table": "po-dium"}, "nftables table"),
        ({"pod_cidr": IPv4Network("10.88.3.0/31")}, "too small"),
    ],
)
def test_bad_settings_are_named(change: dict[str, Any], message: str) -> None:
    config = NetworkConfig(pod_cidr=CIDR)._replace(**change)
    with pytest.raises(NetworkError, match=message):
        check_config(config)


# --- pod files -----------------------------------------------------------------------


def test_hostname_is_one_label() -> None:
    assert pod_hostname("web-0") == "web-0"
    assert pod_hostname("a" * 62 + "-b") == "a" * 62
    with pytest.raises(NetworkError, match="hostname"):
        pod_hostname("Not_A_Name")


def test_hosts_file_names_the_pod() -> None:
    text = hosts_file("web-0", IPv4Address("10.88.3.7"))
    assert text.splitlines()[1] == "127.0.0.1\tlocalhost"
    assert text.endswith("10.88.3.7\tweb-0\n")


def test_node_dns_drops_loopback_servers() -> None:
    dns = node_dns(
        "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2 # lan\n"
        "nameserver ::1\nnameserver 2001:db8::1\ndomain a.test\nsearch b.test c.test\n"
        "options edns0 ndots:2\nnameserver bogus\n"
    )
    assert dns == DnsConfig(("10.0.0.2", "2001:db8::1"), ("b.test", "c.test"),
                            ("edns0", "ndots:2"))
    assert resolv_conf_file(dns) == (
        "nameserver 10.0.0.2\nnameserver 2001:db8::1\nsearch b.test c.test\n"
        "options edns0 ndots:2\n"
    )
    assert resolv_conf_file(DnsConfig()) == ""


def test_write_pod_files(tmp_path: Path) -> None:
    target = tmp_path / "uid" / "network"
    write_pod_files(target, "web-0", IPv4Address("10.88.3.7"), DnsConfig(("10.0.0.2",)))
    assert sorted(p.name for p in target.iterdir()) == ["hostname", "hosts", "resolv.conf"]
    assert (target / "hostname").read_text() == "web-0\n"
    assert (target / "resolv.conf").read_text() == "nameserver 10.0.0.2\n"
    assert (target / "hosts").stat().st_mode & 0o777 == 0o644


# --- nftables ------------------------------------------------------------------------


def test_port_mapping_checks_and_round_trips() -> None:
    mapping = port_mapping("10.88.3.7", 80, 8080, "TCP")
    assert mapping == PortMapping(IPv4Address("10.88.3.7"), 80, 8080, "tcp")
    assert mapping.comment() == "hostport tcp 8080 10.88.3.7:80"
    assert PortMapping.from_comment(mapping.comment()) == mapping
    assert PortMapping.from_comment("something else") is None
    with pytest.raises(NetworkError, match="unknown protocol"):
        port_mapping("10.88.3.7", 80, 8080, "ICMP")
    with pytest.raises(NetworkError, match="hostPort 70000"):
        port_mapping("10.88.3.7", 80, 70000)


class FakeNft(NatTable):
    """Plays nft: keeps the hostports chain's rules, records every script."""

    def __init__(self) -> None:
        super().__init__("pttable", CIDR)
        self.scripts: list[str] = []
        self.rules: dict[int, str] = {}  # handle → comment
        self.next_handle = 10
        self.calls: list[list[str]] = []  # every nft call's arguments

    def _run(self, args: list[str], stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        out = ""
        if args[:2] == ["-f", "-"]:
            assert stdin is not None
            self.scripts.append(stdin)
            for line in stdin.splitlines():
                if "hostports handle" in line:
                    del self.rules[int(line.split()[-1])]
                elif line.startswith("add rule inet pttable hostports"):
                    self.rules[self.next_handle] = line.split('comment "')[1].rstrip('"')
                    self.next_handle += 1
        elif args[0] == "-j":
            items: list[dict[str, object]] = [{"metainfo": {}}, {"chain": {}}]
            items += [{"rule": {"handle": h, "comment": c}} for h, c in self.rules.items()]
            out = json.dumps({"nftables": items})
        return subprocess.CompletedProcess(args, 0, out, "")


def test_ensure_writes_masquerade_for_the_pod_cidr() -> None:
    nat = FakeNft()
    nat.ensure()
    script = nat.scripts[0]
    assert "add table inet pttable\n" in script
    assert "ip saddr 10.88.3.0/24 ip daddr != 10.88.3.0/24 masquerade" in script
    assert "flush chain inet pttable postrouting" in script
    assert "flush chain inet pttable hostports" not in script  # published ports survive


def test_publish_unpublish() -> None:
    nat = FakeNft()
    nat.publish("10.88.3.7", 80, 8080)
    nat.publish("10.88.3.7", 80, 8080)  # no-op
    assert len(nat.scripts) == 1
    assert "meta l4proto tcp th dport 8080 dnat ip to 10.88.3.7:80" in nat.scripts[0]
    nat.publish("10.88.3.7", 53, 5353, "UDP")
    nat.publish("10.88.3.8", 80, 8080, "UDP")  # another protocol: no clash
    with pytest.raises(PortConflictError, match="tcp/8080: already published to 10.88.3.7:80"):
        nat.publish("10.88.3.8", 80, 8080)
    assert nat.unpublish("10.88.3.8", 80, 8080, "udp")
    assert not nat.unpublish("10.88.3.8", 80, 8080, "udp")
    assert nat.unpublish_pod("10.88.3.7") == 2
    assert nat.published() == []


def test_a_pod_without_hostports_is_torn_down_without_nft() -> None:
    nat = FakeNft()
    assert nat.unpublish_pod("10.88.3.9") == 0  # the first time, the chain is read
    calls = len(nat.calls)
    assert calls > 0
    assert nat.unpublish_pod("10.88.3.10") == 0
    assert len(nat.calls) == calls  # then known: no nft at all
    nat.publish("10.88.3.11", 80, 8080)
    assert nat.unpublish_pod("10.88.3.11") == 1  # a pod that published is looked up
    assert nat.published() == []
    calls = len(nat.calls)
    assert nat.unpublish_pod("10.88.3.11") == 0
    assert len(nat.calls) == calls
