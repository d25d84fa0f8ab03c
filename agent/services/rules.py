"""Services as nftables rules: a pure function from a ``Catalog`` to a script.

The node's Service table (``inet <table>``, its own, beside the node's hostPort
table) holds:

    nat-prerouting, nat-output   (nat hooks) the cluster DNS redirect, then
                                 ``jump services``: traffic from pods and from the
                                 node itself takes the same path
    services                     a vmap from ``address . protocol . port`` (the
                                 clusterIP; externalIPs go to ``ext-*``) and one
                                 from ``protocol . port`` on any local address
                                 but 127/8 (NodePorts → ``ext-*``)
    ext-<svc>                    marks the connection for masquerade (the reply must
                                 come back through this node), then ``svc-*``
    svc-<svc>                    a client in an endpoint's affinity set goes back to
                                 it; else ``numgen random mod N`` picks one
    ep-<svc>/<ip>/<port>         hairpin / same-bridge mark, affinity update, DNAT
    aff-<svc>/<ip>/<port>/<t>    (sets) client addresses stuck to one endpoint for t s
    nat-postrouting              masquerade what carries the mark
    filter-input, -forward,      (filter hooks) new connections to a Service port with
    -output → endpoints-check    no ready endpoint go to ``no-endpoints``: a TCP reset
                                 or ICMP port unreachable at once (reject is not
                                 allowed in nat or prerouting hooks)

``<svc>`` is ``<namespace>/<name>/<protocol>/<port>``. ``transaction`` wraps the
rules in one ``nft -f`` script that rewrites the table in place: rules flushed and
rewritten, chains and sets no longer wanted deleted, affinity sets still wanted
kept with their clients (a whole-table delete would forget every client's pod at
each endpoint change). One transaction: never a half-programmed moment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import NamedTuple

from agent.network.config import gateway_of
from agent.services.catalog import Catalog
from proto.podium.v1 import service_pb2

MASQUERADE_MARK = 0x4000
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as Kubernetes
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
LOOPBACK = IPv4Network("127.0.0.0/8")
# Base chains: (name, type, hook, priority). Priorities as numbers: nft accepts the
# symbolic "dstnat" only for the prerouting hook.
BASE_CHAINS = (
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
    ("filter-input", "filter", "input", 0),
    ("filter-forward", "filter", "forward", 0),
    ("filter-output", "filter", "output", 0),
)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


class Endpoint(NamedTuple):
    ip: IPv4Address
    port: int


class PortRule(NamedTuple):
    """One Service port as the node programs it."""

    key: str  # <namespace>/<name>/<protocol>/<port>: names its chains
    protocol: str  # nft's spelling: tcp, udp, sctp
    port: int
    cluster_ips: tuple[IPv4Address, ...]  # straight to the pick
    external_ips: tuple[IPv4Address, ...]  # through ext-* (marked)
    node_port: int  # 0: none
    endpoints: tuple[Endpoint, ...]  # ready ones, sorted
    affinity: int | None  # ClientIP timeout in seconds; None: no affinity


class DnsRedirect(NamedTuple):
    """Traffic to ``cluster_dns`` port 53 (UDP and TCP) goes to ``address:port``."""

    cluster_dns: IPv4Address
    address: IPv4Address
    port: int = 53


class ProxySettings(NamedTuple):
    table: str
    # This node's pod CIDR: connections from its pods to an endpoint on the same
    # bridge are masqueraded, else the endpoint would answer the client directly
    # (same L2) past the DNAT. None: only a pod reaching itself (hairpin).
    pod_cidr: IPv4Network | None = None
    dns: DnsRedirect | None = None
    mark: int = MASQUERADE_MARK


class Plan(NamedTuple):
    rules: tuple[PortRule, ...]
    skipped: tuple[str, ...]  # one line per Service port (or address) left out, and why


class StaleFlows(NamedTuple):
    """UDP flows a Service port sent to an endpoint it no longer has. Conntrack keeps
    a UDP flow's DNAT while packets keep coming, so without deleting these a client
    that keeps its socket would talk to the old endpoint for good."""

    endpoint: Endpoint
    destinations: tuple[IPv4Address, ...]  # the port's clusterIPs and externalIPs
    port: int  # the Service port on them
    node_port: int  # 0: none


class Ruleset(NamedTuple):
    """The table's content: what ``transaction`` writes, and the names it needs."""

    chains: tuple[str, ...]  # every chain, base chains first
    sets: tuple[str, ...]
    lines: tuple[str, ...]  # "add set …" and "add rule …" lines, table-qualified


# --- planning: the Catalog → one PortRule per Service port --------------------------


def plan(catalog: Catalog) -> Plan:
    """Every Service port the node must program, in a stable order.

    Headless Services get nothing; an address or port another Service took first
    (by namespace/name order) is left out of the later one and reported, so one
    bad Service never breaks the transaction for all.
    """
    rules: list[PortRule] = []
    skipped: list[str] = []
    taken: dict[tuple[object, ...], str] = {}
    for (namespace, name), service in sorted(catalog.services.items()):
        where = f"service {namespace}/{name}"
        spec = service.spec
        if spec.cluster_ip == "None":
            continue  # headless: DNS answers with the pods
        if not (_NAME.match(namespace) and _NAME.match(name)):
            skipped.append(f"{where}: not a DNS label name")
            continue
        cluster_ips = _addresses([spec.cluster_ip], where, "clusterIP", skipped)
        # Not the load balancer's ingress: podium reports the nodes' own addresses
        # there, served through the NodePort; taking <node>:<port> too would capture
        # the node's own services (a LoadBalancer on port 22 would take its ssh).
        external = _addresses(list(spec.external_ips), where, "externalIP", skipped)
        endpoints = catalog.endpoints.get((namespace, name))
        affinity = None
        if spec.session_affinity == "ClientIP":
            config = spec.session_affinity_config.client_ip
            affinity = (config.timeout_seconds if config.HasField("timeout_seconds")
                        and config.timeout_seconds > 0 else DEFAULT_AFFINITY_TIMEOUT)
        for port in spec.ports:
            protocol = PROTOCOLS.get(port.protocol or "TCP")
            if protocol is None or not 0 < port.port < 65536:
                skipped.append(f"{where}: port {port.port}/{port.protocol}: not a TCP, UDP "
                               "or SCTP port")
                continue
            key = f"{namespace}/{name}/{protocol}/{port.port}"

            def claim(frontend: tuple[object, ...], what: str, key: str = key) -> bool:
                owner = taken.setdefault(frontend, key)
                if owner != key:
                    skipped.append(f"service {key}: {what} is taken by {owner}")
                return owner == key

            node_port = port.node_port if spec.type in NODE_PORT_TYPES else 0
            if node_port and not (0 < node_port < 65536
                                  and claim((protocol, node_port), f"nodePort {node_port}")):
                node_port = 0
            rules.append(PortRule(
                key=key, protocol=protocol, port=port.port,
                cluster_ips=tuple(ip for ip in cluster_ips
                                  if claim((ip, protocol, port.port), f"{ip}:{port.port}")),
                external_ips=tuple(ip for ip in external
                                   if claim((ip, protocol, port.port), f"{ip}:{port.port}")),
                node_port=node_port,
                endpoints=ready_endpoints(endpoints, port, spec.publish_not_ready_addresses),
                affinity=affinity,
            ))
    return Plan(tuple(rules), tuple(skipped))


def ready_endpoints(endpoints: service_pb2.Endpoints | None, port: service_pb2.ServicePort,
                    not_ready_too: bool = False) -> tuple[Endpoint, ...]:
    """The addresses serving ``port``: its EndpointPort is the one of the same name
    and protocol in each subset."""
    if endpoints is None:
        return ()
    protocol = port.protocol or "TCP"
    found: set[Endpoint] = set()
    for subset in endpoints.subsets:
        addresses = [*subset.addresses, *(subset.not_ready_addresses if not_ready_too else [])]
        for ep_port in subset.ports:
            if ep_port.name != port.name or (ep_port.protocol or "TCP") != protocol:
                continue
            if not 0 < ep_port.port < 65536:
                continue
            for address in addresses:
                ip = _ipv4(address.ip)
                if ip is not None:
                    found.add(Endpoint(ip, ep_port.port))
    return tuple(sorted(found))


def _addresses(values: Iterable[str], where: str, what: str,
               skipped: list[str]) -> list[IPv4Address]:
    out: list[IPv4Address] = []
    for value in values:
        if not value:
            continue
        ip = _ipv4(value)
        if ip is None:
            skipped.append(f"{where}: {what} {value!r}: not an IPv4 address")
        elif ip not in out:
            out.append(ip)
    return out


def _ipv4(value: str) -> IPv4Address | None:
    try:
        ip = ip_address(value)
    except ValueError:
        return None
    return ip if isinstance(ip, IPv4Address) else None


# --- rendering: PortRules → the table's chains, sets and rules ----------------------


def render(rules: Iterable[PortRule], settings: ProxySettings) -> Ruleset:
    t = f"inet {settings.table}"
    mark = f"0x{settings.mark:x}"
    chains = [name for name, *_ in BASE_CHAINS] + ["services", "endpoints-check",
                                                   "no-endpoints"]
    sets: list[str] = []
    lines: list[str] = []
    to_pick: list[str] = []  # vmap elements of `services`
    to_node_port: list[str] = []
    reject: list[str] = []  # address . protocol . port with no endpoint
    reject_node_port: list[str] = []

    def rule(chain: str, text: str) -> None:
        lines.append(f"add rule {t} {chain} {text}")

    for r in rules:
        frontends = [(ip, "svc") for ip in r.cluster_ips] + [(ip, "ext") for ip in r.external_ips]
        if not r.endpoints:
            reject += [f"{ip} . {r.protocol} . {r.port}" for ip, _ in frontends]
            if r.node_port:
                reject_node_port.append(f"{r.protocol} . {r.node_port}")
            continue
        if not frontends and not r.node_port:
            continue
        svc, ext = f"svc-{r.key}", f"ext-{r.key}"
        chains.append(svc)
        to_pick += [f"{ip} . {r.protocol} . {r.port} : goto {kind}-{r.key}"
                    for ip, kind in frontends]
        if r.external_ips or r.node_port:
            chains.append(ext)
            rule(ext, f"meta mark set meta mark | {mark}")
            rule(ext, f"goto {svc}")
        if r.node_port:
            to_node_port.append(f"{r.protocol} . {r.node_port} : goto {ext}")
        eps = [f"ep-{r.key}/{ep.ip}/{ep.port}" for ep in r.endpoints]
        affs = [f"aff-{r.key}/{ep.ip}/{ep.port}/{r.affinity}" for ep in r.endpoints]
        if r.affinity is not None:
            for aff, ep_chain in zip(affs, eps, strict=True):
                sets.append(aff)
                lines.append(f"add set {t} {aff} {{ type ipv4_addr; flags dynamic,timeout; "
                             f"timeout {r.affinity}s; }}")
                rule(svc, f"ip saddr @{aff} goto {ep_chain}")
        if len(eps) == 1:
            rule(svc, f"goto {eps[0]}")
        else:
            picks = ", ".join(f"{i} : goto {ep}" for i, ep in enumerate(eps))
            rule(svc, f"numgen random mod {len(eps)} vmap {{ {picks} }}")
        for i, (ep_chain, target) in enumerate(zip(eps, r.endpoints, strict=True)):
            chains.append(ep_chain)
            same_bridge = settings.pod_cidr is not None and target.ip in settings.pod_cidr
            if settings.pod_cidr is not None and same_bridge:
                # Not the node itself (the bridge's address): replies come back to it.
                clients = f"{settings.pod_cidr} ip saddr != {gateway_of(settings.pod_cidr)}"
            else:
                clients = str(target.ip)
            rule(ep_chain, f"ip saddr {clients} meta mark set meta mark | {mark}")
            if r.affinity is not None:
                rule(ep_chain, f"update @{affs[i]} {{ ip saddr }}")
            rule(ep_chain, f"meta l4proto {r.protocol} dnat ip to {target.ip}:{target.port}")

    for chain in ("nat-prerouting", "nat-output"):
        if settings.dns is not None:
            dns = settings.dns
            rule(chain, f"ip daddr {dns.cluster_dns} meta l4proto {{ tcp, udp }} th dport 53 "
                        f"dnat ip to {dns.address}:{dns.port}")
        rule(chain, "jump services")
    if to_pick:
        rule("services", f"ip daddr . meta l4proto . th dport vmap {{ {', '.join(to_pick)} }}")
    on_node = f"fib daddr type local ip daddr != {LOOPBACK}"
    if to_node_port:
        rule("services", f"{on_node} meta l4proto . th dport vmap {{ {', '.join(to_node_port)} }}")
    rule("nat-postrouting", f"meta mark & {mark} == {mark} masquerade")
    for chain in ("filter-input", "filter-forward", "filter-output"):
        rule(chain, "ct state new jump endpoints-check")
    if reject:
        rule("endpoints-check",
             f"ip daddr . meta l4proto . th dport {{ {', '.join(reject)} }} goto no-endpoints")
    if reject_node_port:
        rule("endpoints-check",
             f"{on_node} meta l4proto . th dport {{ {', '.join(reject_node_port)} }} "
             "goto no-endpoints")
    rule("no-endpoints", "meta l4proto tcp reject with tcp reset")
    rule("no-endpoints", "reject")
    return Ruleset(tuple(chains), tuple(sets), tuple(lines))


def transaction(ruleset: Ruleset, table: str, existing_chains: Iterable[str] = (),
                existing_sets: Iterable[str] = ()) -> str:
    """The one ``nft -f`` script that turns the table (holding ``existing_*``) into
    ``ruleset``: flush every rule, delete what is no longer wanted, add the rest
    (adding a chain or set that exists is a no-op, and keeps a set's elements)."""
    t = f"inet {table}"
    base = {name: (kind, hook, prio) for name, kind, hook, prio in BASE_CHAINS}
    out = [f"add table {t}", f"flush table {t}"]
    wanted_chains, wanted_sets = set(ruleset.chains), set(ruleset.sets)
    out += [f"delete chain {t} {c}" for c in sorted(set(existing_chains) - wanted_chains)]
    out += [f"delete set {t} {s}" for s in sorted(set(existing_sets) - wanted_sets)]
    for chain in ruleset.chains:
        if chain in base:
            kind, hook, prio = base[chain]
            out.append(f"add chain {t} {chain} {{ type {kind} hook {hook} priority {prio}; }}")
        else:
            out.append(f"add chain {t} {chain}")
    out += ruleset.lines
    return "\n".join(out) + "\n"


def render_catalog(catalog: Catalog, settings: ProxySettings) -> tuple[Ruleset, Plan]:
    """``plan`` then ``render``: the table for ``catalog``, and the plan it came from."""
    the_plan = plan(catalog)
    return render(the_plan.rules, settings), the_plan


def stale_udp_flows(before: Iterable[PortRule] | None,
                    after: Iterable[PortRule]) -> tuple[StaleFlows, ...]:
    """The UDP endpoints ``before`` programmed that ``after`` no longer has, per
    Service port (a Service gone takes all of its own), with the frontends ``before``
    had: the flows to clear once ``after`` is in force. ``before`` None (the first
    sync since start): nothing, as nothing is known to have been programmed."""
    if before is None:
        return ()
    kept = {r.key: set(r.endpoints) for r in after if r.protocol == "udp"}
    return tuple(
        StaleFlows(ep, r.cluster_ips + r.external_ips, r.port, r.node_port)
        for r in before if r.protocol == "udp"
        for ep in r.endpoints if ep not in kept.get(r.key, set()))
