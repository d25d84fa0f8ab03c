"""The Service rules as pure functions: Catalog → plan → nft script."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.services import (
    Catalog,
    DnsRedirect,
    Endpoint,
    PortRule,
    ProxySettings,
    catalog_of,
    plan,
    render,
    transaction,
)
from proto.podium.v1 import service_pb2

POD_CIDR = IPv4Network("10.88.1.0/24")
SETTINGS = ProxySettings(table="ptsvc", pod_cidr=POD_CIDR)
T = "inet ptsvc"


def service(name: str, cluster_ip: str = "10.96.0.20",
            ports: list[tuple[str, int]] | None = None, namespace: str = "default",
            type: str = "ClusterIP", node_ports: list[int] | None = None,
            protocol: str = "TCP", **spec: object) -> service_pb2.Service:
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.cluster_ip, svc.spec.type = cluster_ip, type
    for i, (port_name, port) in enumerate(ports if ports is not None else [("", 80)]):
        p = svc.spec.ports.add(name=port_name, port=port, protocol=protocol)
        if node_ports:
            p.node_port = node_ports[i]
    for key, value in spec.items():
        if isinstance(value, list):
            getattr(svc.spec, key).extend(value)
        else:
            setattr(svc.spec, key, value)
    return svc


def endpoints(name: str, ready: list[str], ports: list[tuple[str, int]] | None = None,
              not_ready: list[str] | None = None, namespace: str = "default",
              protocol: str = "TCP") -> service_pb2.Endpoints:
    eps = service_pb2.Endpoints()
    eps.metadata.name, eps.metadata.namespace = name, namespace
    subset = eps.subsets.add()
    for ip in ready:
        subset.addresses.add(ip=ip)
    for ip in not_ready or []:
        subset.not_ready_addresses.add(ip=ip)
    for port_name, port in ports if ports is not None else [("", 8080)]:
        subset.ports.add(name=port_name, port=port, protocol=protocol)
    return eps


def rules_of(catalog: Catalog, settings: ProxySettings = SETTINGS) -> list[str]:
    return list(render(plan(catalog).rules, settings).lines)


def chain_rules(lines: list[str], chain: str) -> list[str]:
    prefix = f"add rule {T} {chain} "
    return [line[len(prefix):] for line in lines if line.startswith(prefix)]


# --- plan ------------------------------------------------------------------------------


def test_plan_resolves_ready_endpoints_by_port_name_and_protocol() -> None:
    svc = service("web", ports=[("http", 80), ("admin", 81)])
    eps = endpoints("web", ["10.88.2.5", "10.88.1.7"], [("http", 8080), ("admin", 9090)],
                    not_ready=["10.88.3.9"])
    other = eps.subsets.add()  # a second subset: a pod whose http port has another number
    other.addresses.add(ip="10.88.4.4")
    other.ports.add(name="http", port=8888, protocol="TCP")
    other.ports.add(name="http", port=7777, protocol="UDP")  # same name, other protocol

    rules = plan(catalog_of([svc], [eps])).rules

    assert [r.key for r in rules] == ["default/web/tcp/80", "default/web/tcp/81"]
    assert rules[0].endpoints == (
        Endpoint(IPv4Address("10.88.1.7"), 8080),
        Endpoint(IPv4Address("10.88.2.5"), 8080),
        Endpoint(IPv4Address("10.88.4.4"), 8888),
    )
    assert rules[1].endpoints == (Endpoint(IPv4Address("10.88.1.7"), 9090),
                                  Endpoint(IPv4Address("10.88.2.5"), 9090))
    assert rules[0].cluster_ips == (IPv4Address("10.96.0.20"),)


def test_plan_publishes_not_ready_addresses_when_the_service_asks() -> None:
    svc = service("peers", publish_not_ready_addresses=True)
    eps = endpoints("peers", ["10.88.1.2"], not_ready=["10.88.1.3"])
    (rule,) = plan(catalog_of([svc], [eps])).rules
    assert [str(e.ip) for e in rule.endpoints] == ["10.88.1.2", "10.88.1.3"]


def test_plan_leaves_headless_services_out() -> None:
    the_plan = plan(catalog_of([service("db", cluster_ip="None")],
                               [endpoints("db", ["10.88.1.2"])]))
    assert the_plan.rules == () and the_plan.skipped == ()


def test_plan_node_ports_only_for_node_port_and_load_balancer_types() -> None:
    services = [service("a", "10.96.0.1", node_ports=[30001]),  # ClusterIP: ignored
                service("b", "10.96.0.2", type="NodePort", node_ports=[30002]),
                service("c", "10.96.0.3", type="LoadBalancer", node_ports=[30003])]
    assert [r.node_port for r in plan(catalog_of(services)).rules] == [0, 30002, 30003]


def test_plan_external_ips_go_to_the_external_path_but_not_the_ingress() -> None:
    svc = service("lb", type="LoadBalancer", node_ports=[30080],
                  external_ips=["192.0.2.7", "not-an-ip", "192.0.2.7"])
    svc.status.load_balancer.ingress.add(ip="10.99.0.2")
    the_plan = plan(catalog_of([svc]))
    (rule,) = the_plan.rules
    # The ingress is the nodes' addresses, served through the NodePort only.
    assert rule.external_ips == (IPv4Address("192.0.2.7"),)
    assert the_plan.skipped == ("service default/lb: externalIP 'not-an-ip': not an IPv4 address",)


def test_plan_affinity_timeout_defaults_to_three_hours() -> None:
    sticky = service("sticky", session_affinity="ClientIP")
    short = service("short", "10.96.0.21", session_affinity="ClientIP")
    short.spec.session_affinity_config.client_ip.timeout_seconds = 60
    rules = {r.key: r.affinity for r in plan(catalog_of([sticky, short])).rules}
    assert rules == {"default/sticky/tcp/80": 10800, "default/short/tcp/80": 60}
    assert plan(catalog_of([service("plain")])).rules[0].affinity is None


def test_plan_a_taken_address_or_node_port_stays_with_the_first_service() -> None:
    first = service("a", "10.96.0.5", type="NodePort", node_ports=[30005])
    second = service("b", "10.96.0.5", type="NodePort", node_ports=[30005],
                     external_ips=["192.0.2.1"])
    the_plan = plan(catalog_of([second, first]))
    a, b = the_plan.rules
    assert (a.cluster_ips, a.node_port) == ((IPv4Address("10.96.0.5"),), 30005)
    assert (b.cluster_ips, b.node_port, b.external_ips) == ((), 0, (IPv4Address("192.0.2.1"),))
    assert set(the_plan.skipped) == {
        "service default/b/tcp/80: nodePort 30005 is taken by default/a/tcp/80",
        "service default/b/tcp/80: 10.96.0.5:80 is taken by default/a/tcp/80",
    }


def test_plan_same_port_number_on_udp_and_tcp_are_distinct() -> None:
    tcp = service("dns-tcp", "10.96.0.53", ports=[("", 53)])
    udp = service("dns-udp", "10.96.0.53", ports=[("", 53)], protocol="UDP")
    the_plan = plan(catalog_of([tcp, udp]))
    assert the_plan.skipped == ()
    assert [r.protocol for r in the_plan.rules] == ["tcp", "udp"]


# --- render ----------------------------------------------------------------------------


def test_render_spreads_a_cluster_ip_over_every_ready_endpoint() -> None:
    lines = rules_of(catalog_of([service("web")],
                                [endpoints("web", ["10.88.1.5", "10.88.2.5", "10.88.3.5"])]))
    svc = "svc-default/web/tcp/80"
    eps = [f"ep-{svc[4:]}/10.88.{n}.5/8080" for n in (1, 2, 3)]
    assert chain_rules(lines, "services") == [
        f"ip daddr . meta l4proto . th dport vmap {{ 10.96.0.20 . tcp . 80 : goto {svc} }}"]
    assert chain_rules(lines, svc) == [
        f"numgen random mod 3 vmap {{ 0 : goto {eps[0]}, 1 : goto {eps[1]}, 2 : goto {eps[2]} }}"]
    # The endpoint on this node's bridge: its neighbours' connections are masqueraded,
    # not the node's own (the bridge's address), whose replies come back to it anyway.
    assert chain_rules(lines, eps[0]) == [
        "ip saddr 10.88.1.0/24 ip saddr != 10.88.1.1 meta mark set meta mark | 0x4000",
        "meta l4proto tcp dnat ip to 10.88.1.5:8080"]
    # One on another node: only a pod reaching itself would need it (never, here).
    assert chain_rules(lines, eps[1]) == [
        "ip saddr 10.88.2.5 meta mark set meta mark | 0x4000",
        "meta l4proto tcp dnat ip to 10.88.2.5:8080"]
    assert chain_rules(lines, "nat-postrouting") == ["meta mark & 0x4000 == 0x4000 masquerade"]
    assert chain_rules(lines, "nat-prerouting") == ["jump services"]
    assert chain_rules(lines, "nat-output") == ["jump services"]
    assert chain_rules(lines, "endpoints-check") == []


def test_render_one_endpoint_needs_no_pick() -> None:
    lines = rules_of(catalog_of([service("web")], [endpoints("web", ["10.88.2.5"])]))
    assert chain_rules(lines, "svc-default/web/tcp/80") == [
        "goto ep-default/web/tcp/80/10.88.2.5/8080"]


def test_render_hairpin_only_without_a_pod_cidr() -> None:
    lines = rules_of(catalog_of([service("web")], [endpoints("web", ["10.88.1.5"])]),
                     ProxySettings(table="ptsvc"))
    assert chain_rules(lines, "ep-default/web/tcp/80/10.88.1.5/8080")[0] == \
        "ip saddr 10.88.1.5 meta mark set meta mark | 0x4000"


def test_render_rejects_at_once_without_ready_endpoints() -> None:
    svc = service("idle", type="NodePort", node_ports=[30007], external_ips=["192.0.2.9"],
                  protocol="UDP")
    lines = rules_of(catalog_of([svc], [endpoints("idle", [], not_ready=["10.88.1.5"])]))
    assert chain_rules(lines, "endpoints-check") == [
        "ip daddr . meta l4proto . th dport { 10.96.0.20 . udp . 80, 192.0.2.9 . udp . 80 } "
        "goto no-endpoints",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport { udp . 30007 } "
        "goto no-endpoints",
    ]
    for chain in ("filter-input", "filter-forward", "filter-output"):
        assert chain_rules(lines, chain) == ["ct state new jump endpoints-check"]
    assert chain_rules(lines, "no-endpoints") == ["meta l4proto tcp reject with tcp reset",
                                                 "reject"]
    assert chain_rules(lines, "services") == []
    assert not any("svc-" in line or "ep-" in line for line in lines)


def test_render_node_ports_and_external_ips_are_marked_for_masquerade() -> None:
    svc = service("lb", type="LoadBalancer", node_ports=[30080], external_ips=["192.0.2.7"])
    lines = rules_of(catalog_of([svc], [endpoints("lb", ["10.88.2.5"])]))
    ext, pick = "ext-default/lb/tcp/80", "svc-default/lb/tcp/80"
    assert chain_rules(lines, "services") == [
        "ip daddr . meta l4proto . th dport vmap { "
        f"10.96.0.20 . tcp . 80 : goto {pick}, 192.0.2.7 . tcp . 80 : goto {ext} }}",
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap { "
        f"tcp . 30080 : goto {ext} }}",
    ]
    assert chain_rules(lines, ext) == ["meta mark set meta mark | 0x4000", f"goto {pick}"]


def test_render_client_ip_affinity_checks_before_the_pick() -> None:
    svc = service("sticky", session_affinity="ClientIP")
    svc.spec.session_affinity_config.client_ip.timeout_seconds = 90
    ruleset = render(plan(catalog_of([svc], [endpoints("sticky", ["10.88.2.5", "10.88.3.5"])]))
                     .rules, SETTINGS)
    key = "default/sticky/tcp/80"
    sets = [f"aff-{key}/10.88.2.5/8080/90", f"aff-{key}/10.88.3.5/8080/90"]
    eps = [f"ep-{key}/10.88.2.5/8080", f"ep-{key}/10.88.3.5/8080"]
    assert ruleset.sets == tuple(sets)
    lines = list(ruleset.lines)
    assert f"add set {T} {sets[0]} {{ type ipv4_addr; flags dynamic,timeout; timeout 90s; }}" \
        in lines
    assert chain_rules(lines, f"svc-{key}") == [
        f"ip saddr @{sets[0]} goto {eps[0]}",
        f"ip saddr @{sets[1]} goto {eps[1]}",
        f"numgen random mod 2 vmap {{ 0 : goto {eps[0]}, 1 : goto {eps[1]} }}",
    ]
    assert chain_rules(lines, eps[1]) == [
        "ip saddr 10.88.3.5 meta mark set meta mark | 0x4000",
        f"update @{sets[1]} {{ ip saddr }}",
        "meta l4proto tcp dnat ip to 10.88.3.5:8080",
    ]
    # A set is declared before the first rule that names it.
    first_use = min(i for i, line in enumerate(lines) if f"@{sets[0]}" in line)
    assert lines.index(f"add set {T} {sets[0]} {{ type ipv4_addr; flags dynamic,timeout; "
                       "timeout 90s; }") < first_use


def test_render_cluster_dns_redirect_comes_before_the_services() -> None:
    settings = SETTINGS._replace(dns=DnsRedirect(IPv4Address("10.96.0.10"),
                                                 IPv4Address("10.88.1.1"), 5353))
    lines = rules_of(catalog_of(), settings)
    for chain in ("nat-prerouting", "nat-output"):
        assert chain_rules(lines, chain) == [
            "ip daddr 10.96.0.10 meta l4proto { tcp, udp } th dport 53 dnat ip to 10.88.1.1:5353",
            "jump services"]


def test_render_an_empty_catalog_is_the_bare_table() -> None:
    ruleset = render((), SETTINGS)
    assert ruleset.sets == ()
    assert ruleset.chains == ("nat-prerouting", "nat-output", "nat-postrouting", "filter-input",
                              "filter-forward", "filter-output", "services", "endpoints-check",
                              "no-endpoints")


# --- transaction ---------------------------------------------------------------------


def test_transaction_rewrites_the_table_in_place_keeping_wanted_sets() -> None:
    svc = service("sticky", session_affinity="ClientIP")
    ruleset = render(plan(catalog_of([svc], [endpoints("sticky", ["10.88.2.5"])])).rules,
                     SETTINGS)
    kept = "aff-default/sticky/tcp/80/10.88.2.5/8080/10800"
    script = transaction(ruleset, "ptsvc",
                         existing_chains=["nat-prerouting", "ep-default/old/tcp/80/10.88.2.9/80",
                                          "svc-default/old/tcp/80"],
                         existing_sets=[kept, "aff-default/old/tcp/80/10.88.2.9/80/10800"])
    lines = script.splitlines()
    assert lines[:5] == [
        f"add table {T}",
        f"flush table {T}",
        f"delete chain {T} ep-default/old/tcp/80/10.88.2.9/80",
        f"delete chain {T} svc-default/old/tcp/80",
        f"delete set {T} aff-default/old/tcp/80/10.88.2.9/80/10800",
    ]
    assert f"delete set {T} {kept}" not in lines
    assert f"add chain {T} nat-prerouting {{ type nat hook prerouting priority -100; }}" in lines
    assert f"add chain {T} nat-postrouting {{ type nat hook postrouting priority 100; }}" in lines
    assert f"add chain {T} filter-forward {{ type filter hook forward priority 0; }}" in lines
    assert f"add chain {T} svc-default/sticky/tcp/80" in lines
    # Every chain exists before any rule is added.
    last_chain = max(i for i, line in enumerate(lines) if line.startswith("add chain"))
    first_rule = min(i for i, line in enumerate(lines) if line.startswith("add rule"))
    assert last_chain < first_rule
    assert script.endswith("\n")


# --- properties ----------------------------------------------------------------------

_octet = st.integers(min_value=2, max_value=9)


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    services, eps = [], []
    for i in range(draw(st.integers(min_value=0, max_value=4))):
        name = f"s{i}"
        kind = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
        port = draw(st.sampled_from([80, 81]))
        svc = service(name, f"10.96.0.{draw(_octet)}", ports=[("p", port)],
                      type=kind, node_ports=[30000 + draw(_octet)] if kind != "ClusterIP" else None,
                      session_affinity=draw(st.sampled_from(["None", "ClientIP"])))
        services.append(svc)
        ready = sorted({f"10.88.{draw(_octet)}.{draw(_octet)}"
                        for _ in range(draw(st.integers(min_value=0, max_value=4)))})
        eps.append(endpoints(name, ready, [("p", 8080)]))
    return catalog_of(services, eps)


@settings(max_examples=150, deadline=None)
@given(catalogs())
def test_render_every_name_a_rule_uses_is_declared(catalog: Catalog) -> None:
    the_plan = plan(catalog)
    ruleset = render(the_plan.rules, SETTINGS)
    chains, sets = set(ruleset.chains), set(ruleset.sets)
    assert len(chains) == len(ruleset.chains) and len(sets) == len(ruleset.sets)
    text = "\n".join(ruleset.lines)
    assert set(re.findall(r"(?:goto|jump) ([^\s,}]+)", text)) <= chains
    assert set(re.findall(r"@([^\s,}]+)", text)) <= sets
    for rule in the_plan.rules:
        reachable = rule.cluster_ips or rule.external_ips or rule.node_port
        assert (f"svc-{rule.key}" in chains) == bool(rule.endpoints and reachable)
        if rule.endpoints and reachable:
            n = len(rule.endpoints)
            picks = [line for line in ruleset.lines
                     if line.startswith(f"add rule {T} svc-{rule.key} ")
                     and ("numgen" in line or " goto ep-" in line and "@" not in line)]
            assert len(picks) == 1
            assert (f"numgen random mod {n} " in picks[0]) == (n > 1)
    # Frontends are never programmed twice (nft would refuse the whole script).
    frontends = [f for r in the_plan.rules for f in [*r.cluster_ips, *r.external_ips]]
    keys = [(str(ip), r.protocol, r.port) for r in the_plan.rules
            for ip in [*r.cluster_ips, *r.external_ips]]
    assert len(keys) == len(set(keys)) and len(frontends) == len(keys)
    node_ports = [r.node_port for r in the_plan.rules if r.node_port]
    assert len(node_ports) == len(set(node_ports))


def test_port_rule_fields_are_what_render_reads() -> None:
    rule = PortRule(key="ns/a/tcp/80", protocol="tcp", port=80,
                    cluster_ips=(IPv4Address("10.96.0.1"),), external_ips=(), node_port=0,
                    endpoints=(Endpoint(IPv4Address("10.88.9.9"), 80),), affinity=None)
    lines = list(render([rule], SETTINGS).lines)
    assert chain_rules(lines, "ep-ns/a/tcp/80/10.88.9.9/80")[-1] == \
        "meta l4proto tcp dnat ip to 10.88.9.9:80"
