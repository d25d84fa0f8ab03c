"""A network the test's nodes share, as a switch between machines would be.

A bridge lives in a network namespace of its own; each node namespace gets one
veth into it (``eth0`` inside the node) with an address of ``SUBNET``. The
addresses exist only inside namespaces the test made, so traffic between the
"nodes" never reaches a real network. ``close()`` removes the wire's namespace,
which takes the bridge and every veth with it.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute

from agent.network import create_netns, remove_netns
from agent.network.netns import run_in_netns

SUBNET = IPv4Network("10.99.0.0/24")
NODE_IFNAME = "eth0"
# The wire's own address: a client outside every node (NodePort tests).
OUTSIDE = IPv4Interface(f"{SUBNET[1]}/{SUBNET.prefixlen}")


def _index(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise AssertionError(f"link {name} missing")
    return int(found[0])


class Wire:
    def __init__(self, directory: Path, bridge: str) -> None:
        self.netns = directory / "wire-netns"
        self.bridge = bridge
        self.plugged: dict[Path, IPv4Interface] = {}
        self.extra = 0  # addresses handed out by add_address
        create_netns(self.netns)

        def make() -> None:
            with IPRoute() as ipr:
                ipr.link("add", ifname=bridge, kind="bridge")
                index = _index(ipr, bridge)
                ipr.addr("add", index=index, address=str(OUTSIDE.ip),
                         prefixlen=OUTSIDE.network.prefixlen)
                ipr.link("set", index=index, state="up")

        run_in_netns(self.netns, make)

    def plug(self, node_netns: Path) -> IPv4Interface:
        """Connects a node's namespace; returns the node's address on the wire."""
        n = len(self.plugged) + 1
        address = IPv4Interface(f"{SUBNET[10 + n]}/{SUBNET.prefixlen}")
        outside = f"{self.bridge}p{n}"

        def wire_side() -> None:
            fd = os.open(node_netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with IPRoute() as ipr:
                    ipr.link("add", ifname=outside, kind="veth",
                             peer={"ifname": NODE_IFNAME, "net_ns_fd": fd})
                    ipr.link("set", index=_index(ipr, outside),
                             master=_index(ipr, self.bridge), state="up")
            finally:
                os.close(fd)

        def node_side() -> None:
            with IPRoute() as ipr:
                ipr.link("set", index=_index(ipr, "lo"), state="up")
                eth0 = _index(ipr, NODE_IFNAME)
                ipr.addr("add", index=eth0, address=str(address.ip),
                         prefixlen=address.network.prefixlen)
                ipr.link("set", index=eth0, state="up")

        run_in_netns(self.netns, wire_side)
        run_in_netns(node_netns, node_side)
        self.plugged[node_netns] = address
        return address

    def add_address(self, node_netns: Path) -> IPv4Address:
        """Another address on a plugged node's ``eth0``, as a machine may have several
        (from the top of ``SUBNET``, one after the other)."""
        self.extra += 1
        address = SUBNET[-1 - self.extra]

        def node_side() -> None:
            with IPRoute() as ipr:
                ipr.addr("add", index=_index(ipr, NODE_IFNAME), address=str(address),
                         prefixlen=SUBNET.prefixlen)

        run_in_netns(node_netns, node_side)
        return address

    def close(self) -> None:
        remove_netns(self.netns)
