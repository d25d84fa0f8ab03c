"""Services and host-gw routes on the real kernel, across three test "nodes".

Each node is a network namespace holding its bridge ``ptbr0``, pod CIDR
10.88.<i>.0/24, nftables tables ``ptnat`` (hostPorts, masquerade) and
``ptnat_svc`` (Services), and an uplink ``ptup0`` (10.99.0.<i>/24) into a
"wire" namespace whose bridge ``ptwire0`` joins the nodes (and, where a test
needs one, an outside machine at 10.99.0.100). Pods are namespaces on a node's
bridge running a small TCP server that answers with its name and the peer's
address. The nodes have no default route, as a test node has none. Nothing of it
touches the host's own network.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from agent.network import (
    NetworkConfig,
    PodNetwork,
    Sandbox,
    create_netns,
    enable_ip_forwarding,
    remove_netns,
    run_in_netns,
)
from agent.services import (
    ROUTE_PROTOCOL,
    Catalog,
    ClusterCatalog,
    RouteSync,
    ServiceProxy,
    catalog_of,
)
from proto.podium.v1 import cluster_pb2, node_pb2, service_pb2
from tests.conftest import need, need_root
from tests.support.cluster import client, running_scheduler

pytestmark = pytest.mark.root

CLUSTER_CIDR = IPv4Network("10.88.0.0/16")
SERVICE_CIDR = IPv4Network("10.96.0.0/16")
CLUSTER_DNS = IPv4Address("10.96.0.10")
WIRE = "10.99.0.{}/24"
OUTSIDE = IPv4Address("10.99.0.100")
DNS_PORT = 5353
PORT = 8080

# Answers every connection with "<name> <peer address>" until killed.
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(128)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{sys.argv[2]} {peer[0]}".encode())
    c.close()
"""

# The node's DNS stand-in: UDP echoes "udp <query>", TCP says "tcp".
DNS_SERVER = """
import socket, sys, threading
where = (sys.argv[1], int(sys.argv[2]))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(where)
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(where)
t.listen(8)
def udp():
    while True:
        data, peer = u.recvfrom(512)
        u.sendto(b"udp " + data, peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = t.accept()
    c.sendall(b"tcp")
    c.close()
"""

# Answers every datagram with its name, until killed.
UDP_SERVER = """
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = u.recvfrom(512)
    u.sendto(sys.argv[2].encode(), peer)
"""


def run(netns: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = run_in_netns(
        netns, lambda: subprocess.run(argv, capture_output=True, text=True, timeout=20))
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {netns}: {done.stderr.strip()}")
    return done


def ask(address: object, port: int) -> str:
    """Connect (from the calling thread's namespace) and return what the server said."""
    with socket.create_connection((str(address), port), timeout=5) as conn:
        chunks = []
        while chunk := conn.recv(200):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def ask_from(netns: Path, address: object, port: int, times: int = 1) -> list[str]:
    return run_in_netns(netns, lambda: [ask(address, port) for _ in range(times)])


def names(answers: list[str]) -> set[str]:
    return {answer.split()[0] for answer in answers}


@dataclass
class SimNode:
    name: str
    netns: Path
    address: IPv4Address
    net: PodNetwork
    proxy: ServiceProxy
    routes: RouteSync

    @property
    def message(self) -> node_pb2.Node:
        node = node_pb2.Node()
        node.metadata.name = self.name
        node.spec.pod_cidr = str(self.net.config.pod_cidr)
        node.status.addresses.add(type="InternalIP", address=str(self.address))
        return node


@dataclass
class Cluster:
    tmp: Path
    wire: Path
    nodes: list[SimNode] = field(default_factory=list)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    extra_netns: list[Path] = field(default_factory=list)

    def add_node(self, i: int) -> SimNode:
        name = f"n{i}"
        netns = self.tmp / f"ptnode{i}"
        create_netns(netns)
        config = NetworkConfig(
            pod_cidr=IPv4Network(f"10.88.{i}.0/24"), bridge="ptbr0", nft_table="ptnat",
            veth_prefix="pt", state_dir=self.tmp / name / "state",
            netns_dir=self.tmp / name / "netns", pods_dir=self.tmp / name / "pods",
            node_netns=netns, resolv_conf=self.tmp / "resolv.conf",
            cluster_cidr=CLUSTER_CIDR, service_cidr=SERVICE_CIDR, cluster_dns=CLUSTER_DNS)
        net = PodNetwork(config)
        node = SimNode(name, netns, IPv4Address(WIRE.format(i).split("/")[0]), net,
                        ServiceProxy.for_node(config, net.gateway.ip, DNS_PORT),
                        RouteSync(name, netns, service_cidr=SERVICE_CIDR, bridge="ptbr0"))
        self.nodes.append(node)
        run(netns, "ip", "link", "set", "lo", "up")
        self.plug(netns, f"ptw{i}", WIRE.format(i))
        net.setup_node()
        enable_ip_forwarding(netns)
        return node

    def plug(self, netns: Path, wire_end: str, address: str) -> None:
        """A veth from ``netns`` (``ptup0``) to the wire's bridge (``wire_end``)."""
        run(self.wire, "ip", "link", "add", wire_end, "type", "veth", "peer", "name", "ptup0",
            "netns", str(netns))
        run(self.wire, "ip", "link", "set", wire_end, "master", "ptwire0", "up")
        run(netns, "ip", "addr", "add", address, "dev", "ptup0")
        run(netns, "ip", "link", "set", "ptup0", "up")

    def outside(self) -> Path:
        """A machine on the wire that is no node: no routes to pods, no rules."""
        netns = self.tmp / "ptoutside"
        create_netns(netns)
        self.extra_netns.append(netns)
        run(netns, "ip", "link", "set", "lo", "up")
        self.plug(netns, "ptwout", f"{OUTSIDE}/24")
        return netns

    def pod(self, node: SimNode, name: str, serve: bool = True) -> Sandbox:
        sandbox = node.net.setup(name, name)
        if serve:
            self.start(sandbox.netns, SERVER, str(PORT), name)
        return sandbox

    def start(self, netns: Path, program: str, *args: str) -> None:
        def spawn() -> subprocess.Popen[str]:
            return subprocess.Popen([sys.executable, "-c", program, *args],
                                    stdout=subprocess.PIPE, text=True)

        server = run_in_netns(netns, spawn)
        self.servers.append(server)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"

    def sync(self, catalog: Catalog) -> None:
        for node in self.nodes:
            node.proxy.sync(catalog)
            node.routes.sync(catalog.nodes.values())

    def catalog(self, services: list[service_pb2.Service],
                endpoints: list[service_pb2.Endpoints]) -> Catalog:
        return catalog_of(services, endpoints, [n.message for n in self.nodes])


def cleanup(cluster: Cluster) -> None:
    """Remove everything, each step tried even when an earlier one fails."""
    steps: list[Callable[[], object]] = []
    for server in cluster.servers:
        steps += [server.kill, server.wait]
        if server.stdout is not None:
            steps.append(server.stdout.close)
    for node in cluster.nodes:
        steps += [node.proxy.close, node.routes.close]
        netns_dir = node.net.config.netns_dir
        for uid in sorted(os.listdir(netns_dir)) if netns_dir.is_dir() else []:
            steps.append(partial(node.net.teardown, uid))
        steps.append(node.net.teardown_node)
    steps += [partial(remove_netns, path) for path in
              [*cluster.extra_netns, *(n.netns for n in cluster.nodes), cluster.wire]]
    errors = []
    for step in steps:
        try:
            step()
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def cluster(tmp_dir: Path) -> Iterator[Cluster]:
    need_root()
    need(shutil.which("nft") is not None, "needs nft (apt-get install nftables)")
    need(shutil.which("ip") is not None, "needs ip (apt-get install iproute2)")
    (tmp_dir / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    wire = tmp_dir / "ptwire"
    create_netns(wire)
    the_cluster = Cluster(tmp_dir, wire)
    try:
        run(wire, "ip", "link", "add", "ptwire0", "type", "bridge")
        run(wire, "ip", "link", "set", "ptwire0", "up")
        for i in (1, 2, 3):
            the_cluster.add_node(i)
        yield the_cluster
    finally:
        cleanup(the_cluster)


def service(name: str, cluster_ip: str = "10.96.0.20", port: int = 80,
            **spec: Any) -> service_pb2.Service:
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, "default"
    svc.spec.cluster_ip = cluster_ip
    svc.spec.type = spec.pop("type", "ClusterIP")
    p = svc.spec.ports.add(name="http", port=port, protocol="TCP")
    p.node_port = spec.pop("node_port", 0)
    for key, value in spec.items():
        setattr(svc.spec, key, value)
    return svc


def endpoints(name: str, *pods: Sandbox) -> service_pb2.Endpoints:
    eps = service_pb2.Endpoints()
    eps.metadata.name, eps.metadata.namespace = name, "default"
    subset = eps.subsets.add()
    for pod in pods:
        subset.addresses.add(ip=str(pod.ip))
    subset.ports.add(name="http", port=PORT, protocol="TCP")
    return eps


# --- routes and the pod network -------------------------------------------------------


def test_pods_reach_each_other_across_nodes_with_their_own_address(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    a = cluster.pod(n1, "pt-a", serve=False)
    b = cluster.pod(n2, "pt-b")
    c = cluster.pod(n3, "pt-c")
    cluster.sync(cluster.catalog([], []))

    assert ask_from(a.netns, b.ip, PORT) == [f"pt-b {a.ip}"]  # not masqueraded
    assert ask_from(a.netns, c.ip, PORT) == [f"pt-c {a.ip}"]
    # The node itself reaches other nodes' pods too.
    assert ask_from(n1.netns, c.ip, PORT)[0].startswith("pt-c ")

    routes = json.loads(run(n1.netns, "ip", "-j", "route", "show", "proto",
                            str(ROUTE_PROTOCOL)).stdout)
    assert {(r["dst"], r.get("gateway"), r.get("dev")) for r in routes} == {
        ("10.88.2.0/24", "10.99.0.2", "ptup0"),
        ("10.88.3.0/24", "10.99.0.3", "ptup0"),
        ("10.96.0.0/16", None, "ptbr0"),
    }


def test_traffic_leaving_the_pod_network_is_masqueraded(cluster: Cluster) -> None:
    n1 = cluster.nodes[0]
    a = cluster.pod(n1, "pt-a", serve=False)
    outside = cluster.outside()
    cluster.start(outside, SERVER, str(PORT), "pt-outside")
    assert ask_from(a.netns, OUTSIDE, PORT) == [f"pt-outside {n1.address}"]


def test_routes_follow_nodes_leaving_and_changing(cluster: Cluster,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "podium.agent.services")
    n1, n2, n3 = cluster.nodes
    cluster.sync(cluster.catalog([], []))
    # A route a previous run left (tagged podium's) and one someone else made.
    run(n1.netns, "ip", "route", "add", "10.88.77.0/24", "via", "10.99.0.77", "proto",
        str(ROUTE_PROTOCOL))
    run(n1.netns, "ip", "route", "add", "10.88.78.0/24", "via", "10.99.0.78")
    moved = n3.message
    moved.status.addresses[0].address = "10.99.0.33"
    far = node_pb2.Node()
    far.metadata.name = "far"
    far.spec.pod_cidr = "10.88.9.0/24"
    far.status.addresses.add(type="InternalIP", address="192.0.2.9")  # not on the wire

    placed = n1.routes.sync([n1.message, moved, far])

    assert {str(r.dst) for r in placed} == {"10.88.3.0/24", "10.96.0.0/16"}
    table = {r["dst"]: r for r in json.loads(run(n1.netns, "ip", "-j", "route").stdout)}
    assert "10.88.2.0/24" not in table  # n2 left
    assert "10.88.77.0/24" not in table  # stale, podium's
    assert table["10.88.78.0/24"]["gateway"] == "10.99.0.78"  # not podium's: kept
    assert table["10.88.3.0/24"]["gateway"] == "10.99.0.33"  # n3 moved
    assert "10.88.9.0/24" not in table
    assert ("node far: address 192.0.2.9 is not on a directly connected network; "
            "no route to its pods 10.88.9.0/24") in caplog.text

    n1.routes.close()
    left = json.loads(run(n1.netns, "ip", "-j", "route", "show", "proto",
                          str(ROUTE_PROTOCOL)).stdout)
    assert left == []
    assert "10.88.78.0/24" in run(n1.netns, "ip", "route").stdout


def test_the_same_plan_is_applied_again_only_after_reapply_after(cluster: Cluster) -> None:
    """Node objects change at every status report: an unchanged plan costs no netlink
    dump, and the periodic pass still repairs what someone else changed."""
    n1, n2, _ = cluster.nodes
    nodes = [n.message for n in cluster.nodes]
    assert n1.routes.sync(nodes)
    run(n1.netns, "ip", "route", "del", "10.88.2.0/24")  # someone else's doing

    assert {str(r.dst) for r in n1.routes.sync(nodes)} == \
        {"10.88.2.0/24", "10.88.3.0/24", "10.96.0.0/16"}  # the plan's, as last placed
    assert "10.88.2.0/24" not in run(n1.netns, "ip", "route").stdout  # not looked at

    n1.routes.reapply_after = 0.0  # the time has come
    n1.routes.sync(nodes)
    table = {r["dst"]: r for r in json.loads(run(n1.netns, "ip", "-j", "route").stdout)}
    assert table["10.88.2.0/24"]["gateway"] == str(n2.address)

    n1.routes.reapply_after = 60.0
    left = n1.routes.sync([n1.message])  # a changed plan goes at once: n2 and n3 left
    assert {str(r.dst) for r in left} == {"10.96.0.0/16"}
    assert "10.88.2.0/24" not in run(n1.netns, "ip", "route").stdout


# --- Services ------------------------------------------------------------------------


def test_cluster_ip_spreads_over_endpoints_on_every_node(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    pods = [cluster.pod(node, f"pt-web{i}") for i, node in enumerate(cluster.nodes, 1)]
    client_pod = cluster.pod(n1, "pt-client", serve=False)
    svc = service("web")
    cluster.sync(cluster.catalog([svc], [endpoints("web", *pods)]))

    answers = ask_from(client_pod.netns, "10.96.0.20", 80, times=60)
    assert names(answers) == {"pt-web1", "pt-web2", "pt-web3"}
    # From another node's pod, and from the node itself (no default route there).
    assert names(ask_from(n2.netns, "10.96.0.20", 80, times=30)) <= {"pt-web1", "pt-web2",
                                                                     "pt-web3"}
    assert len(names(ask_from(n3.netns, "10.96.0.20", 80, times=60))) == 3

    # An endpoint removed leaves the rotation.
    cluster.sync(cluster.catalog([svc], [endpoints("web", pods[0], pods[2])]))
    assert names(ask_from(client_pod.netns, "10.96.0.20", 80, times=40)) == {"pt-web1",
                                                                             "pt-web3"}

    # No endpoint: refused at once (a TCP reset), from a pod and from the node.
    cluster.sync(cluster.catalog([svc], [endpoints("web")]))
    for netns in (client_pod.netns, n1.netns):
        with pytest.raises(ConnectionRefusedError):
            ask_from(netns, "10.96.0.20", 80)
    # And back.
    cluster.sync(cluster.catalog([svc], [endpoints("web", pods[1])]))
    assert names(ask_from(client_pod.netns, "10.96.0.20", 80, times=5)) == {"pt-web2"}


def test_client_ip_affinity_sticks(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    pods = [cluster.pod(node, f"pt-web{i}") for i, node in enumerate(cluster.nodes, 1)]
    clients = [cluster.pod(n1, "pt-c1", serve=False), cluster.pod(n2, "pt-c2", serve=False)]
    svc = service("sticky", session_affinity="ClientIP")
    svc.spec.session_affinity_config.client_ip.timeout_seconds = 600
    cluster.sync(cluster.catalog([svc], [endpoints("sticky", *pods)]))

    first = {c.ip: names(ask_from(c.netns, "10.96.0.20", 80, times=20)) for c in clients}
    assert all(len(seen) == 1 for seen in first.values())

    # Another Service changing rewrites the table; the clients keep their pods.
    other = service("other", cluster_ip="10.96.0.21")
    cluster.sync(cluster.catalog([svc, other], [endpoints("sticky", *pods),
                                                endpoints("other", pods[0])]))
    for c, node in zip(clients, (n1, n2), strict=True):  # still in their affinity sets
        assert str(c.ip) in run(node.netns, "nft", "list", "table", "inet", "ptnat_svc").stdout
    again = {c.ip: names(ask_from(c.netns, "10.96.0.20", 80, times=10)) for c in clients}
    assert again == first

    # The pod a client stuck to goes: its set goes with it, the client moves on.
    (stuck,) = first[clients[0].ip]
    rest = [p for p in pods if p.netns.name != stuck]
    cluster.sync(cluster.catalog([svc], [endpoints("sticky", *rest)]))
    listing = run(n1.netns, "nft", "-t", "list", "table", "inet", "ptnat_svc").stdout
    assert listing.count("set aff-default/sticky/") == 2
    moved = names(ask_from(clients[0].netns, "10.96.0.20", 80, times=10))
    assert len(moved) == 1 and moved != {stuck}


def test_node_port_answers_on_every_node_address(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    web = cluster.pod(n2, "pt-web")
    outside = cluster.outside()
    svc = service("np", type="NodePort", node_port=30080)
    cluster.sync(cluster.catalog([svc], [endpoints("np", web)]))

    for node in cluster.nodes:
        (answer,) = ask_from(outside, node.address, 30080)
        name, peer = answer.split()
        assert name == "pt-web"
        # Masqueraded: the reply must go back through the node that was asked.
        assert peer != str(OUTSIDE)
    # From the node itself, on its own address and on its bridge address.
    assert names(ask_from(n1.netns, n1.address, 30080)) == {"pt-web"}
    assert names(ask_from(n3.netns, n3.net.gateway.ip, 30080)) == {"pt-web"}
    # The clusterIP is no business of the outside.
    assert names(ask_from(n2.netns, "10.96.0.20", 80)) == {"pt-web"}

    # Without endpoints the node port is refused at once on every address.
    cluster.sync(cluster.catalog([svc], [endpoints("np")]))
    with pytest.raises(ConnectionRefusedError):
        ask_from(outside, n1.address, 30080)
    with pytest.raises(ConnectionRefusedError):
        ask_from(n1.netns, n1.address, 30080)


def test_a_pod_reaches_itself_and_its_neighbour_through_its_service(cluster: Cluster) -> None:
    n1 = cluster.nodes[0]
    web = cluster.pod(n1, "pt-web")
    neighbour = cluster.pod(n1, "pt-neighbour", serve=False)
    # The sandbox puts the pod's bridge port in hairpin mode, so its own traffic can
    # come back to it through the DNAT.
    cluster.sync(cluster.catalog([service("self")], [endpoints("self", web)]))

    assert names(ask_from(web.netns, "10.96.0.20", 80, times=3)) == {"pt-web"}  # hairpin
    assert names(ask_from(neighbour.netns, "10.96.0.20", 80, times=3)) == {"pt-web"}


def test_external_ips_are_served_like_the_cluster_ip(cluster: Cluster) -> None:
    n1, n2, _ = cluster.nodes
    web = cluster.pod(n2, "pt-web")
    client_pod = cluster.pod(n1, "pt-client", serve=False)
    svc = service("ext")
    svc.spec.external_ips.append("192.0.2.80")
    run(client_pod.netns, "ip", "route", "add", "192.0.2.0/24", "via", str(n1.net.gateway.ip))
    cluster.sync(cluster.catalog([svc], [endpoints("ext", web)]))
    assert names(ask_from(client_pod.netns, "192.0.2.80", 80)) == {"pt-web"}


def test_cluster_dns_goes_to_the_nodes_dns_server(cluster: Cluster) -> None:
    n1 = cluster.nodes[0]
    client_pod = cluster.pod(n1, "pt-client", serve=False)
    cluster.start(n1.netns, DNS_SERVER, str(n1.net.gateway.ip), str(DNS_PORT))
    cluster.sync(cluster.catalog([], []))

    def query_udp() -> tuple[bytes, Any]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"hello", (str(CLUSTER_DNS), 53))
            return s.recvfrom(512)

    for netns in (client_pod.netns, n1.netns):
        data, peer = run_in_netns(netns, query_udp)
        assert (data, peer) == (b"udp hello", (str(CLUSTER_DNS), 53))
        assert ask_from(netns, CLUSTER_DNS, 53) == ["tcp"]


def udp_service(name: str, cluster_ip: str,
                *pods: Sandbox) -> tuple[service_pb2.Service, service_pb2.Endpoints]:
    """A Service with one UDP port, 53, served on ``PORT`` by ``pods``."""
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, "default"
    svc.spec.cluster_ip, svc.spec.type = cluster_ip, "ClusterIP"
    svc.spec.ports.add(name="dns", port=53, protocol="UDP")
    eps = service_pb2.Endpoints()
    eps.metadata.name, eps.metadata.namespace = name, "default"
    subset = eps.subsets.add()
    for pod in pods:
        subset.addresses.add(ip=str(pod.ip))
    subset.ports.add(name="dns", port=PORT, protocol="UDP")
    return svc, eps


def test_a_udp_client_keeping_its_socket_leaves_a_removed_endpoint(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    pods: dict[str, Sandbox] = {}
    for node, name in ((n2, "pt-udp1"), (n3, "pt-udp2")):
        pods[name] = cluster.pod(node, name, serve=False)
        cluster.start(pods[name].netns, UDP_SERVER, str(PORT), name)
    client_pod = cluster.pod(n1, "pt-client", serve=False)
    svc, eps = udp_service("udp", "10.96.0.53", *pods.values())
    cluster.sync(cluster.catalog([svc], [eps]))  # the first: nothing to clear

    # One socket for the whole test, as a resolver or a UDP stream keeps one.
    sock = run_in_netns(client_pod.netns,
                        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.settimeout(5)

    def exchange(times: int) -> set[str]:
        seen = set()
        for _ in range(times):
            sock.sendto(b"hello", ("10.96.0.53", 53))
            data, peer = sock.recvfrom(512)
            assert peer == ("10.96.0.53", 53)
            seen.add(data.decode())
        return seen

    try:
        first = exchange(10)
        assert len(first) == 1  # conntrack keeps the flow on the endpoint it picked
        (old,) = first
        (other,) = set(pods) - first

        svc, eps = udp_service("udp", "10.96.0.53", pods[other])
        cluster.sync(cluster.catalog([svc], [eps]))

        # The old endpoint still answers: only the flush can move the flow away.
        def direct() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(b"hello", (str(pods[old].ip), PORT))
                return s.recvfrom(512)[0]

        assert run_in_netns(client_pod.netns, direct) == old.encode()
        assert exchange(10) == {other}
    finally:
        sock.close()


def test_endpoint_changes_flow_from_the_scheduler_to_the_rules(cluster: Cluster) -> None:
    n1, n2, n3 = cluster.nodes
    pods = [cluster.pod(node, f"pt-web{i}") for i, node in enumerate(cluster.nodes, 1)]
    client_pod = cluster.pod(n1, "pt-client", serve=False)
    cluster.sync(cluster.catalog([], []))  # the routes between the nodes
    stop = threading.Event()
    with running_scheduler() as scheduler, client(scheduler.port) as stub:
        svc = service("flow", cluster_ip="10.96.0.40")
        svc.spec.ClearField("type")
        stub.Create(cluster_pb2.CreateRequest(object=cluster_pb2.Object(service=svc)))
        stub.Create(cluster_pb2.CreateRequest(
            object=cluster_pb2.Object(endpoints=endpoints("flow", *pods))))
        catalog = ClusterCatalog(f"127.0.0.1:{scheduler.port}", stop)
        applied = threading.Event()

        def program(snapshot: Catalog) -> None:
            n1.proxy.sync(snapshot)
            applied.set()

        catalog.subscribe(program)
        catalog.start()
        try:
            deadline = time.monotonic() + 10
            while ("default", "flow") not in catalog.snapshot().endpoints:
                assert time.monotonic() < deadline, "the catalog never listed the endpoints"
                time.sleep(0.02)
            assert applied.wait(10)
            assert len(names(ask_from(client_pod.netns, "10.96.0.40", 80, times=60))) == 3

            current = stub.Get(cluster_pb2.GetRequest(kind="Endpoints", name="flow")).endpoints
            del current.subsets[0].addresses[0]
            applied.clear()
            stub.Update(cluster_pb2.UpdateRequest(
                object=cluster_pb2.Object(endpoints=current)))
            deadline = time.monotonic() + 10
            while not names(ask_from(client_pod.netns, "10.96.0.40", 80, times=20)) == {
                    "pt-web2", "pt-web3"}:
                assert time.monotonic() < deadline, "pt-web1 never left the rotation"
        finally:
            catalog.close()
