"""Host-gw route planning (pure) and RouteSync's diff against a fake netlink."""

from __future__ import annotations

import errno
import logging
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from agent.services import ROUTE_PROTOCOL, Route, RouteSync, plan_routes
from agent.services import routes as routes_module
from proto.podium.v1 import node_pb2

SERVICES = IPv4Network("10.96.0.0/16")


def node(name: str, cidr: str = "", address: str = "", kind: str = "InternalIP") -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.spec.pod_cidr = cidr
    n.status.addresses.add(type="Hostname", address=name)
    if address:
        n.status.addresses.add(type=kind, address=address)
    return n


NODES = [node("n1", "10.88.1.0/24", "10.99.0.1"),
         node("n2", "10.88.2.0/24", "10.99.0.2"),
         node("n3", "10.88.3.0/24", "10.99.0.3")]


def test_plan_routes_to_every_other_node() -> None:
    the_plan = plan_routes("n1", NODES)
    assert the_plan.routes == (
        Route(IPv4Network("10.88.2.0/24"), IPv4Address("10.99.0.2"), None, "n2"),
        Route(IPv4Network("10.88.3.0/24"), IPv4Address("10.99.0.3"), None, "n3"),
    )
    assert the_plan.skipped == ()


def test_plan_routes_adds_the_service_cidr_through_the_bridge() -> None:
    the_plan = plan_routes("n1", NODES[:1], SERVICES, "ptbr0")
    assert the_plan.routes == (Route(SERVICES, None, "ptbr0", "services"),)
    assert plan_routes("n1", NODES[:1], SERVICES).routes == ()  # no bridge, no route


def test_plan_routes_skips_nodes_without_cidr_or_address() -> None:
    nodes = [NODES[0], node("bare", "", "10.99.0.9"), node("lost", "10.88.9.0/24"),
             node("v6", "10.88.8.0/24", "fd00::8"),
             node("ext", "10.88.7.0/24", "203.0.113.7", kind="ExternalIP")]
    the_plan = plan_routes("n1", nodes)
    assert the_plan.routes == ()
    assert the_plan.skipped == (
        "node bare: no pod CIDR yet",
        "node ext: no InternalIP address yet",
        "node lost: no InternalIP address yet",
        "node v6: no InternalIP address yet",
    )


def test_plan_routes_refuses_overlapping_cidrs() -> None:
    nodes = [*NODES, node("twin", "10.88.2.0/24", "10.99.0.22"),
             node("mine", "10.88.1.128/25", "10.99.0.5"),
             node("inside-services", "10.96.3.0/24", "10.99.0.6")]
    the_plan = plan_routes("n1", nodes, SERVICES, "ptbr0")
    assert [r.node for r in the_plan.routes] == ["services", "n2", "n3"]
    assert set(the_plan.skipped) == {
        "node twin: pod CIDR 10.88.2.0/24 overlaps 10.88.2.0/24 of n2",
        "node mine: pod CIDR 10.88.1.128/25 overlaps this node's 10.88.1.0/24",
        "node inside-services: pod CIDR 10.96.3.0/24 overlaps 10.96.0.0/16 of services",
    }


def test_plan_routes_for_a_node_not_in_the_list_yet() -> None:
    assert len(plan_routes("n9", NODES).routes) == 3


# --- RouteSync against a fake netlink ----------------------------------------------


class FakeMsg(dict[str, Any]):
    def __init__(self, attrs: dict[str, Any], **fields: Any) -> None:
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class FakeIPRoute:
    """The main table as a dict dst → (gateway, oif, proto); ENETUNREACH for gateways
    outside 10.99.0.0/24, as the kernel says for an address not directly reachable."""

    def __init__(self, table: dict[str, tuple[str | None, int | None, int]]) -> None:
        self.table = table
        self.calls: list[tuple[str, str]] = []

    def __enter__(self) -> FakeIPRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def link_lookup(self, ifname: str) -> list[int]:
        return [7] if ifname == "ptbr0" else []

    def get_links(self, index: int) -> list[FakeMsg]:
        return [FakeMsg({"IFLA_IFNAME": "ptbr0"})] if index == 7 else []

    def get_routes(self, family: int, table: int, **match: Any) -> list[FakeMsg]:
        out = []
        for dst, (gateway, oif, proto) in self.table.items():
            net, length = dst.split("/")
            out.append(FakeMsg({"RTA_DST": net, "RTA_GATEWAY": gateway, "RTA_OIF": oif},
                               dst_len=int(length), proto=proto, type=1))
        return out

    def route(self, command: str, **args: Any) -> None:
        self.calls.append((command, args["dst"]))
        gateway = args.get("gateway")
        if command == "del":
            self.table.pop(args["dst"])
        elif gateway is not None and IPv4Address(gateway) not in IPv4Network("10.99.0.0/24"):
            raise NetlinkError(errno.ENETUNREACH, "Network is unreachable")
        else:
            self.table[args["dst"]] = (gateway, args.get("oif"), args["proto"])


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeIPRoute:
    ipr = FakeIPRoute({
        "10.99.0.0/24": (None, 2, 2),  # the node's own network: the kernel's
        "10.88.4.0/24": ("10.99.0.4", None, ROUTE_PROTOCOL),  # a node that left
        "10.88.3.0/24": ("10.99.0.33", None, ROUTE_PROTOCOL),  # a node that moved
        "10.88.2.0/24": ("10.99.0.2", None, ROUTE_PROTOCOL),  # already right
        "10.88.5.0/24": ("10.99.0.50", None, 4),  # someone's static route
    })
    monkeypatch.setattr(routes_module, "_iproute", lambda: ipr)
    return ipr


def test_sync_adds_replaces_and_removes_only_its_own(fake: FakeIPRoute) -> None:
    sync = RouteSync("n1", service_cidr=SERVICES, bridge="ptbr0")
    placed = sync.sync(NODES)
    assert {r.dst for r in placed} == {SERVICES, IPv4Network("10.88.2.0/24"),
                                       IPv4Network("10.88.3.0/24")}
    assert fake.table == {
        "10.99.0.0/24": (None, 2, 2),
        "10.88.2.0/24": ("10.99.0.2", None, ROUTE_PROTOCOL),
        "10.88.3.0/24": ("10.99.0.3", None, ROUTE_PROTOCOL),
        "10.88.5.0/24": ("10.99.0.50", None, 4),
        "10.96.0.0/16": (None, 7, ROUTE_PROTOCOL),
    }
    assert ("replace", "10.88.2.0/24") not in fake.calls  # nothing to do for it

    fake.calls.clear()
    sync.sync(NODES)  # nothing changed: nothing done
    assert fake.calls == []

    sync.close()
    assert fake.table == {"10.99.0.0/24": (None, 2, 2), "10.88.5.0/24": ("10.99.0.50", None, 4)}


def test_sync_leaves_a_foreign_route_alone_and_says_so(
        fake: FakeIPRoute, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "podium.agent.services")
    placed = RouteSync("n1").sync([*NODES, node("n5", "10.88.5.0/24", "10.99.0.5")])
    assert IPv4Network("10.88.5.0/24") not in {r.dst for r in placed}
    assert fake.table["10.88.5.0/24"] == ("10.99.0.50", None, 4)
    assert "node n5: a route to 10.88.5.0/24 that is not podium's is in the way" in caplog.text


def test_sync_logs_an_unreachable_node_once_and_goes_on(
        fake: FakeIPRoute, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "podium.agent.services")
    far = node("far", "10.88.6.0/24", "192.0.2.6")
    sync = RouteSync("n1")
    placed = sync.sync([*NODES, far])
    assert "10.88.6.0/24" not in fake.table
    assert {str(r.dst) for r in placed} == {"10.88.2.0/24", "10.88.3.0/24"}
    line = ("node far: address 192.0.2.6 is not on a directly connected network; "
            "no route to its pods 10.88.6.0/24")
    assert caplog.text.count(line) == 1
    sync.sync([*NODES, far])
    assert caplog.text.count(line) == 1  # not again while nothing changed


def test_sync_without_the_bridge_skips_the_service_route(
        fake: FakeIPRoute, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "podium.agent.services")
    RouteSync("n1", service_cidr=SERVICES, bridge="ptgone").sync(NODES)
    assert "10.96.0.0/16" not in fake.table
    assert "services: device ptgone not found; no route to 10.96.0.0/16 yet" in caplog.text
