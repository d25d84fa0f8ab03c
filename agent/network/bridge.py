"""The node's bridge: every pod's veth is a port on it; it holds the pod CIDR's gateway.

The functions here take an open ``IPRoute``, already in the node's network
namespace (``PodNetwork`` opens it), so they compose into one netlink session
(each pod's veth, and deleting a device, go through ``rtnl.Rtnl``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from agent.errors import NetworkError
from agent.network.netns import run_in_netns

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


@contextmanager
def netlink_errors(what: str) -> Iterator[None]:
    """Turn pyroute2's errors into one-line NetworkErrors naming ``what``."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as e:
        raise NetworkError(f"{what}: {e.args[1] if len(e.args) > 1 else e}") from e


def link_index(name: str) -> int | None:
    """The index of device ``name``, None if there is none, in the calling thread's
    network namespace (where the netlink sockets here are opened).

    ``if_nametoindex`` asks for that one device; a netlink lookup by name lists every
    device, which on a node with a hundred pods' veths costs milliseconds each time."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def ensure_bridge(ipr: Any, name: str, gateway: IPv4Interface) -> int:
    """Make the bridge ``name`` exist, hold ``gateway`` and be up; returns its index.

    Idempotent, and safe against another process doing the same at once: an
    "exists" answer from the kernel counts as success.
    """
    index = link_index(name)
    if index is None:
        with netlink_errors(f"bridge {name}: create"):
            try:
                ipr.link("add", ifname=name, kind="bridge")
            except Exception as e:
                if getattr(e, "code", None) != errno.EEXIST:
                    raise
        index = link_index(name)
        if index is None:
            raise NetworkError(f"bridge {name}: created but not found")
    kind = _link_kind(ipr, index)
    if kind != "bridge":
        raise NetworkError(f"bridge {name}: a device of that name exists and is a {kind}")
    if not _has_address(ipr, index, gateway):
        with netlink_errors(f"bridge {name}: add address {gateway}"):
            try:
                ipr.addr("add", index=index, address=str(gateway.ip),
                         prefixlen=gateway.network.prefixlen)
            except Exception as e:
                if getattr(e, "code", None) != errno.EEXIST:
                    raise
    with netlink_errors(f"bridge {name}: set up"):
        ipr.link("set", index=index, state="up")
    return index


def enable_ip_forwarding(netns: Path | None = None) -> None:
    """Let the node route pods' traffic out (and hostPort traffic in).

    A node-wide setting, so the agent calls it on start, never implicitly. The
    sysctl is per network namespace: ``netns`` picks the node's.
    """

    def write() -> None:
        try:
            with open(IP_FORWARD, "w") as f:
                f.write("1\n")
        except OSError as e:
            raise NetworkError(f"{IP_FORWARD}: {e.strerror}") from e

    run_in_netns(netns, write)


def ip_forwarding(netns: Path | None = None) -> bool:
    def read() -> bool:
        with open(IP_FORWARD) as f:
            return f.read().strip() == "1"

    return run_in_netns(netns, read)


def _link_kind(ipr: Any, index: int) -> str:
    link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return str(kind) if kind else "device without a kind"


def _has_address(ipr: Any, index: int, address: IPv4Interface) -> bool:
    for msg in ipr.get_addr(index=index, family=2):
        if (msg.get_attr("IFA_ADDRESS") == str(address.ip)
                and msg["prefixlen"] == address.network.prefixlen):
            return True
    return False
