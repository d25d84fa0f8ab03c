"""rtnetlink requests on a plain socket: each pod's link, address and route.

pyroute2's ``IPRoute`` runs an asyncio event loop for every request (about 0.25 ms
of CPU each, and 0.3 ms to open one), and its message classes take 30 to 200 µs to
encode one message; every pod start makes nine requests in two network namespaces.
``Rtnl`` packs the few messages a pod needs itself, with ``struct``, as the
kernel's headers lay them out (``linux/rtnetlink.h``, ``linux/if_link.h``,
``linux/veth.h``), sends each on a ``NETLINK_ROUTE`` socket of its own and waits for
its acknowledgement: 20 to 50 µs a request. The node's set-up and the routes to
other nodes (rare, and reading dumps) keep ``IPRoute``.

A socket belongs to the network namespace of the thread that opened it, for its
whole life: open an ``Rtnl`` where its links are (``netns.create_namespaces``
can open one inside the namespaces it makes).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface
from types import TracebackType

from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["Rtnl"]

# Message types and flags (linux/netlink.h, linux/rtnetlink.h).
_NLMSG_ERROR = 2
_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK = 16, 17, 18
_RTM_NEWADDR, _RTM_NEWROUTE = 20, 24
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFF_UP = 0x1

# Attributes. A link's (IFLA_*), inside IFLA_LINKINFO (IFLA_INFO_*), a veth's
# (VETH_INFO_PEER: the peer's ifinfomsg and attributes), a bridge port's
# (IFLA_BRPORT_*), an address's (IFA_*) and a route's (RTA_*).
_IFLA_IFNAME, _IFLA_MASTER, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 3, 10, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA = 1, 2
_IFLA_INFO_SLAVE_KIND, _IFLA_INFO_SLAVE_DATA = 4, 5
_VETH_INFO_PEER = 1
_IFLA_BRPORT_MODE = 4  # hairpin: a frame may leave by the port it came in
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_OIF, _RTA_GATEWAY = 4, 5
_RT_TABLE_MAIN, _RTPROT_STATIC, _RT_SCOPE_UNIVERSE, _RTN_UNICAST = 254, 4, 0, 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_ERROR = struct.Struct("=i")  # after the header of an NLMSG_ERROR: 0 acknowledges
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src lengths, tos, table,
#                                       protocol, scope, type, flags
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_U32 = struct.Struct("=I")


class Rtnl:
    """One rtnetlink socket in the opening thread's network namespace. Requests
    fail with pyroute2's ``NetlinkError`` (code and message), as ``IPRoute``'s do."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                   socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def add_veth(self, name: str, master: int, peer: str, peer_netns_fd: int) -> None:
        """A veth pair, up: ``name`` here, a port of the bridge with index ``master``,
        and ``peer`` born in the network namespace open at ``peer_netns_fd``."""
        peer_link = _link(0) + _text(_IFLA_IFNAME, peer) + _u32(_IFLA_NET_NS_FD, peer_netns_fd)
        self._request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, _link(0, up=True),
                      _text(_IFLA_IFNAME, name), _u32(_IFLA_MASTER, master),
                      _nest(_IFLA_LINKINFO,
                            _text(_IFLA_INFO_KIND, "veth"),
                            _nest(_IFLA_INFO_DATA, _nest(_VETH_INFO_PEER, peer_link))))

    def set_hairpin(self, index: int) -> None:
        """Hairpin mode on the bridge port ``index``."""
        self._request(_RTM_NEWLINK, 0, _link(index),
                      _nest(_IFLA_LINKINFO,
                            _text(_IFLA_INFO_SLAVE_KIND, "bridge"),
                            _nest(_IFLA_INFO_SLAVE_DATA, _attr(_IFLA_BRPORT_MODE, b"\x01"))))

    def index(self, name: str) -> int:
        """The index of device ``name`` (``NetlinkError`` ENODEV when there is none)."""
        reply = self._request(_RTM_GETLINK, 0, _link(0), _text(_IFLA_IFNAME, name))
        return int(_IFINFO.unpack_from(reply, _HEADER.size)[2])

    def set_up(self, index: int) -> None:
        self._request(_RTM_NEWLINK, 0, _link(index, up=True))

    def delete_link(self, name: str) -> bool:
        """Remove device ``name`` if there is one (a veth takes its peer with it)."""
        try:
            self._request(_RTM_DELLINK, 0, _link(0), _text(_IFLA_IFNAME, name))
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise
            return False
        return True

    def add_address(self, index: int, address: IPv4Interface) -> None:
        ip = address.ip.packed
        self._request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL,
                      _IFADDR.pack(socket.AF_INET, address.network.prefixlen, 0, 0, index),
                      _attr(_IFA_LOCAL, ip), _attr(_IFA_ADDRESS, ip))

    def add_default_route(self, gateway: IPv4Address, oif: int) -> None:
        """``default via gateway dev oif`` in the main table, protocol static."""
        self._request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL,
                      _RTMSG.pack(socket.AF_INET, 0, 0, 0, _RT_TABLE_MAIN, _RTPROT_STATIC,
                                  _RT_SCOPE_UNIVERSE, _RTN_UNICAST, 0),
                      _attr(_RTA_GATEWAY, gateway.packed), _u32(_RTA_OIF, oif))

    def _request(self, kind: int, flags: int, *body: bytes) -> bytes:
        """Sends a request of ``kind`` (its fixed header and attributes) and waits
        for its acknowledgement; returns the answer that came before it (a GET's),
        else b"". Only answers to this socket's requests arrive, and it sends one
        request at a time."""
        self._seq += 1
        payload = b"".join(body)
        self._sock.send(_HEADER.pack(_HEADER.size + len(payload), kind,
                                     _NLM_F_REQUEST | _NLM_F_ACK | flags, self._seq, 0)
                        + payload)
        answer = b""
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind_, _, seq, _ = _HEADER.unpack_from(data, offset)
                if seq == self._seq:
                    if kind_ == _NLMSG_ERROR:
                        error = _ERROR.unpack_from(data, offset + _HEADER.size)[0]
                        if error:
                            raise NetlinkError(-error, os.strerror(-error))
                        return answer
                    answer = bytes(data[offset:offset + length])
                offset += max((length + 3) & ~3, _HEADER.size)  # messages are 4-aligned


def _link(index: int, up: bool = False) -> bytes:
    """An ifinfomsg for device ``index`` (0: named by IFLA_IFNAME), setting it up."""
    flags = _IFF_UP if up else 0
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, flags)


def _attr(kind: int, value: bytes) -> bytes:
    """One attribute, padded to the next 4 bytes as netlink aligns them."""
    length = _ATTR.size + len(value)
    return _ATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def _nest(kind: int, *attrs: bytes) -> bytes:
    """Attributes inside one (without NLA_F_NESTED, as iproute2 sends them: the
    kernel parses these leniently)."""
    return _attr(kind, b"".join(attrs))


def _text(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, _U32.pack(value))
