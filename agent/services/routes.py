"""Host-gw: a route to every other node's pod CIDR via that node's address.

    plan_routes(...)   pure: the Node objects → the routes this node wants
    RouteSync          applies a plan with pyroute2 in the node's network namespace

Every route podium adds carries ``ROUTE_PROTOCOL`` (``ip route`` shows it as
``proto 112``): only routes with that tag are ever replaced or removed, so a
route someone else made is left alone, and the first sync after a restart
removes what a previous run left that is no longer wanted. Beside the pod
routes, a device route for the service CIDR through the bridge lets the node
open connections to ClusterIPs even without a default route (the DNAT happens
after the kernel has picked a route for the original address).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Any, NamedTuple

from agent.errors import NetworkError
from agent.network import run_in_netns
from proto.podium.v1 import node_pb2

log = logging.getLogger("podium.agent.services")

ROUTE_PROTOCOL = 112  # podium's tag in rtm_protocol (the kernel's own use 0-4, daemons 8-192)
MAIN_TABLE = 254
AF_INET = 2


class Route(NamedTuple):
    """``dst`` via ``gateway``, or (gateway None) straight out of the device ``dev``."""

    dst: IPv4Network
    gateway: IPv4Address | None = None
    dev: str | None = None
    node: str = ""  # whose pods (for log lines)


class RoutePlan(NamedTuple):
    routes: tuple[Route, ...]
    skipped: tuple[str, ...]  # one line per node left out, and why


def node_address(node: node_pb2.Node) -> IPv4Address | None:
    """The node's first InternalIP that is an IPv4 address."""
    for address in node.status.addresses:
        if address.type == "InternalIP":
            try:
                ip = ip_address(address.address)
            except ValueError:
                continue
            if isinstance(ip, IPv4Address):
                return ip
    return None


def pod_cidr(node: node_pb2.Node) -> IPv4Network | None:
    value = node.spec.pod_cidr or (node.spec.pod_cidrs[0] if node.spec.pod_cidrs else "")
    try:
        cidr = ip_network(value)
    except ValueError:
        return None
    return cidr if isinstance(cidr, IPv4Network) else None


def plan_routes(node_name: str, nodes: Iterable[node_pb2.Node],
                service_cidr: IPv4Network | None = None, bridge: str | None = None) -> RoutePlan:
    """The routes ``node_name`` wants: one per other node with a pod CIDR and an
    address, and the service CIDR through ``bridge`` if both are given.

    A CIDR that overlaps this node's, or one claimed first by another node (by name
    order), is left out and reported."""
    by_name = {n.metadata.name: n for n in nodes}
    me = by_name.get(node_name)
    own = pod_cidr(me) if me is not None else None
    routes: list[Route] = []
    skipped: list[str] = []
    if service_cidr is not None and bridge is not None:
        routes.append(Route(service_cidr, None, bridge, "services"))
    for name in sorted(by_name):
        if name == node_name:
            continue
        node = by_name[name]
        cidr, gateway = pod_cidr(node), node_address(node)
        if cidr is None or gateway is None:
            what = "pod CIDR" if cidr is None else "InternalIP address"
            skipped.append(f"node {name}: no {what} yet")
            continue
        clash = next((r for r in routes if r.dst.overlaps(cidr)), None)
        if own is not None and own.overlaps(cidr):
            skipped.append(f"node {name}: pod CIDR {cidr} overlaps this node's {own}")
        elif clash is not None:
            skipped.append(f"node {name}: pod CIDR {cidr} overlaps {clash.dst} "
                           f"of {clash.node}")
        else:
            routes.append(Route(cidr, gateway, None, name))
    return RoutePlan(tuple(routes), tuple(skipped))


class RouteSync:
    """Keeps podium's routes in the main table of ``netns`` (None: the caller's own).

    ``service_cidr`` and ``bridge`` together add the service CIDR route."""

    def __init__(self, node_name: str, netns: Path | None = None, *,
                 service_cidr: IPv4Network | None = None, bridge: str | None = None,
                 protocol: int = ROUTE_PROTOCOL, reapply_after: float = 20.0) -> None:
        self.node_name = node_name
        self.netns = netns
        self.service_cidr = service_cidr
        self.bridge = bridge
        self.protocol = protocol
        self.reapply_after = reapply_after
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        # The last plan applied, what it placed and when; None until then (and after close).
        self._last: tuple[tuple[Route, ...], list[Route], float] | None = None

    def sync(self, nodes: Iterable[node_pb2.Node]) -> list[Route]:
        """Add, replace and remove routes so the table holds exactly the plan for
        ``nodes`` (what cannot be added is logged and left out); the routes in place.

        The catalog calls this for every batch of changes, and nodes change at every
        status report: the same plan as the last one is not applied again (no netlink
        dump) until ``reapply_after`` seconds have passed, which repairs routes someone
        else changed."""
        the_plan = plan_routes(self.node_name, nodes, self.service_cidr, self.bridge)
        with self._lock:
            if self._last is not None:
                routes, placed, applied = self._last
                if routes == the_plan.routes and \
                        time.monotonic() - applied < self.reapply_after:
                    return list(placed)
            placed, problems = run_in_netns(self.netns, lambda: self._apply(the_plan.routes))
            self._last = (the_plan.routes, placed, time.monotonic())
            self._report([*the_plan.skipped, *problems])
        return placed

    def routes(self) -> list[Route]:
        """podium's routes as the kernel has them."""
        def read() -> list[Route]:
            with _iproute() as ipr:
                return list(self._current(ipr).values())

        return run_in_netns(self.netns, read)

    def close(self) -> None:
        """Remove every route tagged as podium's (idempotent)."""
        with self._lock:
            run_in_netns(self.netns, lambda: self._apply(()))
            self._last = None

    # --- inside (in the node's namespace) -----------------------------------------

    def _apply(self, wanted: tuple[Route, ...]) -> tuple[list[Route], list[str]]:
        problems: list[str] = []
        placed: list[Route] = []
        with _iproute() as ipr:
            current = self._current(ipr)
            foreign = self._foreign(ipr)
            for dst, route in current.items():
                if dst not in {r.dst for r in wanted}:
                    self._route(ipr, "del", route)
                    log.info("route to %s (%s) removed", dst, route.node or "stale")
            for route in wanted:
                if current.get(route.dst, None) is not None and \
                        _same(current[route.dst], route):
                    placed.append(route)
                    continue
                if route.dst in foreign:
                    problems.append(f"{_what(route)}: a route to {route.dst} that is not "
                                    "podium's is in the way; left alone")
                    continue
                try:
                    self._route(ipr, "replace", route)
                except NetworkError as e:
                    problems.append(str(e))
                    continue
                placed.append(route)
                log.info("%s: route to %s via %s", _what(route), route.dst,
                         route.gateway or route.dev)
        return placed, problems

    def _route(self, ipr: Any, command: str, route: Route) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        args: dict[str, Any] = {"dst": str(route.dst), "table": MAIN_TABLE,
                                "proto": self.protocol}
        if route.gateway is not None:
            args["gateway"] = str(route.gateway)
        if route.dev is not None:
            found = ipr.link_lookup(ifname=route.dev)
            if not found:
                raise NetworkError(f"{_what(route)}: device {route.dev} not found; no route "
                                   f"to {route.dst} yet")
            args["oif"] = found[0]
            if route.gateway is None:
                args["scope"] = 253  # link
        try:
            ipr.route(command, **args)
        except NetlinkError as e:
            if command == "del" and e.code == errno.ESRCH:
                return
            if e.code == errno.ENETUNREACH:
                raise NetworkError(
                    f"{_what(route)}: address {route.gateway} is not on a directly "
                    f"connected network; no route to its pods {route.dst}") from e
            message = e.args[1] if len(e.args) > 1 else str(e)
            raise NetworkError(f"{_what(route)}: route {command} {route.dst}: {message}") from e

    def _current(self, ipr: Any) -> dict[IPv4Network, Route]:
        found: dict[IPv4Network, Route] = {}
        for msg in ipr.get_routes(family=AF_INET, table=MAIN_TABLE, proto=self.protocol):
            if msg["proto"] != self.protocol:
                continue
            route = _route_of(ipr, msg)
            if route is not None:
                found[route.dst] = route
        return found

    def _foreign(self, ipr: Any) -> set[IPv4Network]:
        found: set[IPv4Network] = set()
        for msg in ipr.get_routes(family=AF_INET, table=MAIN_TABLE):
            if msg["proto"] != self.protocol and msg["type"] == 1:  # unicast
                route = _route_of(ipr, msg)
                if route is not None:
                    found.add(route.dst)
        return found

    def _report(self, lines: list[str]) -> None:
        """Each problem logged once, when it first appears, not at every sync."""
        for line in lines:
            if line not in self._reported:
                log.warning("routes: %s", line)
        self._reported = set(lines)


def _route_of(ipr: Any, msg: Any) -> Route | None:
    dst = msg.get_attr("RTA_DST") or "0.0.0.0"
    try:
        network = IPv4Network(f"{dst}/{msg['dst_len']}")
    except ValueError:
        return None
    gateway = msg.get_attr("RTA_GATEWAY")
    oif = msg.get_attr("RTA_OIF")
    dev = None
    if gateway is None and oif is not None:
        links = ipr.get_links(oif)
        dev = links[0].get_attr("IFLA_IFNAME") if links else None
    return Route(network, IPv4Address(gateway) if gateway else None, dev)


def _same(have: Route, want: Route) -> bool:
    if want.gateway is not None:
        return have.gateway == want.gateway
    return have.gateway is None and have.dev == want.dev


def _what(route: Route) -> str:
    return f"node {route.node}" if route.node and route.node != "services" else "services"


def _iproute() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()
