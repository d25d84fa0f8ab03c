"""The rtnetlink messages ``Rtnl`` packs, checked against pyroute2's encoder of the
same requests, and its reading of the kernel's answers; no root, no kernel."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from agent.network.rtnl import Rtnl

HEADER = struct.Struct("=IHHII")


class KernelStandIn:
    """The socket's far end: keeps what is sent, answers each request with
    ``replies`` (raw messages before the acknowledgement) and then ``error``."""

    def __init__(self, error: int = 0, replies: Callable[[int], bytes] | None = None) -> None:
        self.sent: list[bytes] = []
        self.error = error
        self.replies = replies
        self._pending = b""

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        seq = HEADER.unpack_from(data)[3]
        before = self.replies(seq) if self.replies else b""
        ack = struct.pack("=i", -self.error) + data[:HEADER.size]
        self._pending = before + HEADER.pack(HEADER.size + len(ack), 2, 0, seq, 0) + ack
        return len(data)

    def recv(self, size: int) -> bytes:
        data, self._pending = self._pending, b""
        return data

    def close(self) -> None:
        pass


def rtnl_on(stand_in: KernelStandIn) -> Rtnl:
    rtnl = Rtnl.__new__(Rtnl)
    rtnl._sock = stand_in  # type: ignore[assignment]
    rtnl._seq = 0
    return rtnl


def encoded(msg: Any, kind: int, flags: int = 0, seq: int = 1) -> bytes:
    header = msg["header"]
    header["type"], header["sequence_number"] = kind, seq
    header["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    msg.encode()
    return bytes(msg.data)


def link(index: int = 0, up: bool = False, attrs: list[tuple[str, Any]] | None = None) -> Any:
    msg = ifinfmsg()
    msg["index"] = index
    if up:
        msg["flags"] = msg["change"] = IFF_UP
    msg["attrs"] = attrs or []
    return msg


def test_links_are_packed_as_pyroute2_packs_them() -> None:
    kernel = KernelStandIn()
    rtnl = rtnl_on(kernel)
    rtnl.add_veth("pvtest0", 5, "eth0", 7)
    rtnl.set_hairpin(9)
    rtnl.set_up(3)
    veth = link(up=True, attrs=[
        ("IFLA_IFNAME", "pvtest0"), ("IFLA_MASTER", 5),
        ("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "veth"),
            ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": [
                ("IFLA_IFNAME", "eth0"), ("IFLA_NET_NS_FD", 7)]})]})]})])
    hairpin = link(9, attrs=[("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_SLAVE_KIND", "bridge"),
        ("IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", 1)]})]})])
    assert kernel.sent == [
        encoded(veth, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 1),
        encoded(hairpin, RTM_NEWLINK, 0, 2),
        encoded(link(3, up=True), RTM_NEWLINK, 0, 3),
    ]


def test_address_and_route_are_packed_as_pyroute2_packs_them() -> None:
    kernel = KernelStandIn()
    rtnl = rtnl_on(kernel)
    rtnl.add_address(4, IPv4Interface("10.88.3.7/24"))
    rtnl.add_default_route(IPv4Address("10.88.3.1"), 4)
    address = ifaddrmsg()
    address["family"], address["prefixlen"], address["index"] = socket.AF_INET, 24, 4
    address["attrs"] = [("IFA_LOCAL", "10.88.3.7"), ("IFA_ADDRESS", "10.88.3.7")]
    route = rtmsg()
    route["family"], route["table"], route["proto"] = socket.AF_INET, 254, 4
    route["scope"], route["type"] = 0, 1
    route["attrs"] = [("RTA_GATEWAY", "10.88.3.1"), ("RTA_OIF", 4)]
    assert kernel.sent == [
        encoded(address, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 1),
        encoded(route, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, 2),
    ]


def test_index_reads_the_links_answer() -> None:
    def answer(seq: int) -> bytes:
        reply = link(42, attrs=[("IFLA_IFNAME", "eth0")])
        return encoded(reply, RTM_NEWLINK, 0, seq)

    kernel = KernelStandIn(replies=answer)
    assert rtnl_on(kernel).index("eth0") == 42
    assert kernel.sent == [encoded(link(attrs=[("IFLA_IFNAME", "eth0")]), RTM_GETLINK)]


def test_errors_are_raised_and_a_missing_device_is_not_one_to_delete() -> None:
    kernel = KernelStandIn(error=errno.ENODEV)
    rtnl = rtnl_on(kernel)
    assert rtnl.delete_link("pvgone0") is False
    assert kernel.sent == [encoded(link(attrs=[("IFLA_IFNAME", "pvgone0")]), RTM_DELLINK)]
    kernel.error = errno.EEXIST
    with pytest.raises(NetlinkError) as caught:
        rtnl.add_address(4, IPv4Interface("10.88.3.7/24"))
    assert caught.value.code == errno.EEXIST
    with pytest.raises(NetlinkError):
        rtnl.delete_link("pvtest0")
