"""Host-local IPAM: allocation, persistence, exhaustion, two processes at once."""

from __future__ import annotations

import json
import multiprocessing
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from agent.errors import AddressExhaustedError, NetworkError
from agent.network import HostLocalIPAM

CIDR = IPv4Network("10.88.3.0/24")


def test_first_address_after_the_gateway(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(CIDR, tmp_path)
    assert ipam.gateway == IPv4Interface("10.88.3.1/24")
    assert ipam.allocate("a") == IPv4Interface("10.88.3.2/24")
    assert ipam.allocate("b") == IPv4Interface("10.88.3.3/24")
    assert ipam.allocations() == {"a": IPv4Address("10.88.3.2"), "b": IPv4Address("10.88.3.3")}


def test_same_pod_same_address(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(CIDR, tmp_path)
    first = ipam.allocate("a")
    ipam.allocate("b")
    assert ipam.allocate("a") == first
    assert ipam.lookup("a") == first
    assert ipam.lookup("nobody") is None


def test_persisted_across_instances(tmp_path: Path) -> None:
    HostLocalIPAM(CIDR, tmp_path).allocate("a")
    again = HostLocalIPAM(CIDR, tmp_path)  # an agent restarted
    assert again.allocate("a") == IPv4Interface("10.88.3.2/24")
    assert again.allocate("b") == IPv4Interface("10.88.3.3/24")
    data = json.loads((tmp_path / "ipam-10.88.3.0_24.json").read_text())
    assert data["pods"] == {"a": "10.88.3.2", "b": "10.88.3.3"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_release_frees_and_is_idempotent(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(CIDR, tmp_path)
    ipam.allocate("a")
    assert ipam.release("a") == IPv4Address("10.88.3.2")
    assert ipam.release("a") is None
    assert ipam.allocations() == {}


def test_released_address_is_not_reused_at_once(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(CIDR, tmp_path)
    ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") == IPv4Interface("10.88.3.3/24")


def test_never_network_gateway_or_broadcast(tmp_path: Path) -> None:
    cidr = IPv4Network("10.88.3.0/29")  # .0 network, .1 gateway, .7 broadcast
    ipam = HostLocalIPAM(cidr, tmp_path)
    got = {ipam.allocate(f"pod{i}").ip for i in range(5)}
    assert got == {IPv4Address(f"10.88.3.{n}") for n in range(2, 7)}
    with pytest.raises(AddressExhaustedError, match=r"10\.88\.3\.0/29: all 5 pod addresses"):
        ipam.allocate("one-too-many")


def test_wraps_around_to_freed_addresses(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(IPv4Network("10.88.3.0/29"), tmp_path)
    for i in range(5):
        ipam.allocate(f"pod{i}")
    ipam.release("pod1")  # 10.88.3.3
    assert ipam.allocate("new").ip == IPv4Address("10.88.3.3")


def test_smallest_cidr(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(IPv4Network("10.88.3.0/30"), tmp_path)
    assert ipam.allocate("a").ip == IPv4Address("10.88.3.2")
    with pytest.raises(AddressExhaustedError):
        ipam.allocate("b")
    with pytest.raises(NetworkError, match="too small"):
        HostLocalIPAM(IPv4Network("10.88.3.0/31"), tmp_path)


def test_damaged_state_is_an_error_not_a_reset(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(CIDR, tmp_path)
    ipam.path.write_text("{not json")
    with pytest.raises(NetworkError, match=r"ipam-10\.88\.3\.0_24\.json: not a valid"):
        ipam.allocate("a")


def test_state_of_another_cidr_is_refused(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(CIDR, tmp_path)
    ipam.path.write_text(json.dumps({"version": 1, "cidr": "10.0.0.0/24", "pods": {}}))
    with pytest.raises(NetworkError, match="holds 10.0.0.0/24"):
        ipam.lookup("a")


def test_pod_uid_must_be_a_plain_name(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="not a plain name"):
        HostLocalIPAM(CIDR, tmp_path).allocate("../x")


def _allocate_many(state_dir: str, prefix: str, count: int) -> None:
    ipam = HostLocalIPAM(CIDR, Path(state_dir))
    for i in range(count):
        ipam.allocate(f"{prefix}-{i}")


def test_two_processes_never_share_an_address(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_allocate_many, args=(str(tmp_path), name, 60))
        for name in ("left", "right")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    allocations = HostLocalIPAM(CIDR, tmp_path).allocations()
    assert len(allocations) == 120
    assert len(set(allocations.values())) == 120
