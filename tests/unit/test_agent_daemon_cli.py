"""podium-agent's command line: defaults, the scheduler's options, usage errors."""

from __future__ import annotations

import socket
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from agent.cli import main, node_identity, parser


def test_defaults_follow_the_design() -> None:
    args = parser().parse_args([])
    assert args.listen == "0.0.0.0:7401"
    assert args.root == Path("/run/podium")
    assert args.pod_cidr is None  # the scheduler's, or 10.88.0.0/24 without one
    assert args.scheduler == "" and args.node_ip is None
    assert args.bridge == "podium0" and args.cgroup_parent == "podium"
    assert args.image_store == Path("/var/lib/podium/images")


def test_scheduler_options_parse() -> None:
    args = parser().parse_args(["--scheduler", "127.0.0.1:7400", "--node-name", "n1",
                                "--node-ip", "192.0.2.7", "--pod-cidr", "10.88.3.0/24"])
    assert args.scheduler == "127.0.0.1:7400" and args.node_name == "n1"
    assert str(args.node_ip) == "192.0.2.7"
    assert args.pod_cidr == IPv4Network("10.88.3.0/24")


def test_a_bad_cidr_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--pod-cidr", "10.88.0.0/33"])
    assert stopped.value.code == 2
    assert "--pod-cidr" in capsys.readouterr().err


def test_an_agent_on_its_own_bridge_is_a_node_of_its_own() -> None:
    host = socket.gethostname()
    assert node_identity("", "podium0") == (host, "podium")
    assert node_identity("", "br-2") == (f"{host}-br-2", "podium_br_2")
    assert node_identity("n7", "br-2") == ("n7", "podium_br_2")


def test_a_node_missing_what_pods_need_is_refused_at_start(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import agent.preflight

    problems = ["overlay filesystem: not in /proc/filesystems (modprobe overlay)"]
    monkeypatch.setattr(agent.preflight, "check_node", lambda: problems)
    assert main(["--root", "/nonexistent-podium-test"]) == 1
    assert capsys.readouterr().err == f"podium-agent: {problems[0]}\n"


def test_cluster_dns_options_parse() -> None:
    args = parser().parse_args(["--no-cluster-dns", "--dns-port", "5353",
                                "--cluster-domain", "corp.local"])
    assert (args.cluster_dns, args.dns_port, args.cluster_domain) == (False, 5353,
                                                                      "corp.local")
    assert parser().parse_args([]).cluster_dns is True
