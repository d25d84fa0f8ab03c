"""Services and pod networking across nodes: what kube-proxy and a host-gw CNI do.

    ClusterCatalog(address, stop)   Services, Endpoints and Nodes watched from the
                                    scheduler; ``subscribe(fn)`` hears each batch
    Catalog                         one immutable snapshot of them
    ServiceProxy(settings, netns)   the node's Service table (``inet <table>_svc``)
                                    in nftables: ClusterIP, NodePort, externalIPs,
                                    ClientIP affinity, reject without endpoints, the
                                    cluster DNS redirect; ``for_node(config, dns)``
    RouteSync(node_name, netns)     a route to every other node's pod CIDR via its
                                    address, and the service CIDR through the bridge
    plan, render, transaction       the rules as pure functions (rules.py)
    plan_routes                     the routes as a pure function (routes.py)
    stale_udp_flows, is_stale,      UDP flows to endpoints that left keep their DNAT
    flush_stale_flows               in conntrack; ``sync`` deletes them after each
                                    change (pure choice, then pyroute2: conntrack.py)

Wiring, for the agent: ``catalog.subscribe(proxy.sync)`` and
``catalog.subscribe(lambda c: routes.sync(c.nodes.values()))``, then
``catalog.start()``; on stop ``catalog.close()``. The table and routes stay in force
while the agent is away (pods keep their Services across a restart);
``remove_node_services(config)`` removes them when the node is taken down.
Errors are ``agent.errors.NetworkError``.
"""

from __future__ import annotations

from agent.services.catalog import Catalog, ClusterCatalog, catalog_of
from agent.services.conntrack import Flow, flush_stale_flows, is_stale
from agent.services.proxy import SERVICE_TABLE_SUFFIX, ServiceProxy, remove_node_services
from agent.services.routes import ROUTE_PROTOCOL, Route, RoutePlan, RouteSync, plan_routes
from agent.services.rules import (
    MASQUERADE_MARK,
    DnsRedirect,
    Endpoint,
    Plan,
    PortRule,
    ProxySettings,
    Ruleset,
    StaleFlows,
    plan,
    render,
    stale_udp_flows,
    transaction,
)

__all__ = [
    "MASQUERADE_MARK",
    "ROUTE_PROTOCOL",
    "SERVICE_TABLE_SUFFIX",
    "Catalog",
    "ClusterCatalog",
    "DnsRedirect",
    "Endpoint",
    "Flow",
    "Plan",
    "PortRule",
    "ProxySettings",
    "Route",
    "RoutePlan",
    "RouteSync",
    "Ruleset",
    "ServiceProxy",
    "StaleFlows",
    "catalog_of",
    "flush_stale_flows",
    "is_stale",
    "plan",
    "plan_routes",
    "remove_node_services",
    "render",
    "stale_udp_flows",
    "transaction",
]
