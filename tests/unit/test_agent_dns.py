"""The cluster DNS resolver: every kind of name, every kind of absence, from a snapshot."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from agent.dns import TTL, ClusterResolver, Snapshot
from proto.podium.v1 import meta_pb2, service_pb2

Key = tuple[str, str]


def service(name: str, namespace: str = "default", cluster_ip: str = "10.96.0.20",
            ports: tuple[tuple[str, str, int], ...] = (("http", "TCP", 80),),
            publish_not_ready: bool = False) -> service_pb2.Service:
    return service_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace),
        spec=service_pb2.ServiceSpec(
            cluster_ip=cluster_ip, publish_not_ready_addresses=publish_not_ready,
            ports=[service_pb2.ServicePort(name=n, protocol=p, port=port)
                   for n, p, port in ports]))


def endpoints(name: str, ready: list[tuple[str, str]], namespace: str = "default",
              not_ready: tuple[tuple[str, str], ...] = (),
              ports: tuple[tuple[str, str, int], ...] = (("http", "TCP", 8080),),
              ) -> service_pb2.Endpoints:
    return service_pb2.Endpoints(
        metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace),
        subsets=[service_pb2.EndpointSubset(
            addresses=[service_pb2.EndpointAddress(ip=ip, hostname=h) for ip, h in ready],
            not_ready_addresses=[service_pb2.EndpointAddress(ip=ip, hostname=h)
                                 for ip, h in not_ready],
            ports=[service_pb2.EndpointPort(name=n, protocol=p, port=port)
                   for n, p, port in ports])])


class Cluster:
    """A snapshot source the tests change between queries."""

    def __init__(self) -> None:
        self.services: dict[Key, service_pb2.Service] = {}
        self.endpoints: dict[Key, service_pb2.Endpoints] = {}
        self.calls = 0

    def add(self, svc: service_pb2.Service, eps: service_pb2.Endpoints | None = None) -> None:
        key = (svc.metadata.namespace, svc.metadata.name)
        self.services[key] = svc
        if eps is not None:
            self.endpoints[key] = eps

    def __call__(self) -> Snapshot:
        self.calls += 1
        return self.services, self.endpoints


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    c.add(service("web", ports=(("http", "TCP", 80), ("dns", "UDP", 53), ("", "TCP", 81))),
          endpoints("web", [("10.88.0.5", "")]))
    c.add(service("db", namespace="prod", cluster_ip="None",
                  ports=(("pg", "TCP", 5432),)),
          endpoints("db", [("10.88.1.7", "db-0"), ("10.88.2.9", "")], namespace="prod",
                    not_ready=(("10.88.3.3", ""),), ports=(("pg", "TCP", 5433),)))
    return c


def ask(resolver: ClusterResolver, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    assert resolver.handles(query.question[0].name)
    return resolver.resolve(query)


def answers(response: dns.message.Message) -> set[str]:
    assert response.rcode() == dns.rcode.NOERROR
    return {rdata.to_text() for rrset in response.answer for rdata in rrset}


def is_nodata(response: dns.message.Message) -> bool:
    return (response.rcode() == dns.rcode.NOERROR and not response.answer
            and soa_in_authority(response))


def soa_in_authority(response: dns.message.Message) -> bool:
    return [r.rdtype for r in response.authority] == [dns.rdatatype.SOA] and \
        response.authority[0].name == dns.name.from_text("cluster.local")


def test_a_service_name_is_its_cluster_ip(cluster: Cluster) -> None:
    response = ask(ClusterResolver(cluster), "web.default.svc.cluster.local")
    assert answers(response) == {"10.96.0.20"}
    assert response.answer[0].ttl == TTL == 5
    assert response.flags & dns.flags.AA and response.flags & dns.flags.QR


def test_names_are_case_insensitive_and_keep_the_askers_case(cluster: Cluster) -> None:
    response = ask(ClusterResolver(cluster), "WeB.Default.SVC.Cluster.Local")
    assert answers(response) == {"10.96.0.20"}
    assert response.answer[0].name.to_text() == "WeB.Default.SVC.Cluster.Local."


def test_a_headless_service_is_its_ready_pods(cluster: Cluster) -> None:
    response = ask(ClusterResolver(cluster), "db.prod.svc.cluster.local")
    assert answers(response) == {"10.88.1.7", "10.88.2.9"}  # not 10.88.3.3: not ready
    assert len(response.answer) == 1  # one RRset of two records


def test_a_headless_service_publishing_not_ready_pods_names_them_too() -> None:
    c = Cluster()
    c.add(service("peers", cluster_ip="None", publish_not_ready=True),
          endpoints("peers", [("10.88.0.2", "")], not_ready=(("10.88.0.3", ""),)))
    assert answers(ask(ClusterResolver(c), "peers.default.svc.cluster.local")) == {
        "10.88.0.2", "10.88.0.3"}


def test_a_headless_services_pods_have_names_of_their_own(cluster: Cluster) -> None:
    resolver = ClusterResolver(cluster)
    assert answers(ask(resolver, "db-0.db.prod.svc.cluster.local")) == {"10.88.1.7"}
    assert answers(ask(resolver, "10-88-2-9.db.prod.svc.cluster.local")) == {"10.88.2.9"}
    assert ask(resolver, "db-1.db.prod.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    # A ClusterIP Service has no per-pod names.
    assert ask(resolver, "10-88-0-5.web.default.svc.cluster.local").rcode() == \
        dns.rcode.NXDOMAIN


def test_srv_of_a_service_names_its_port_and_itself(cluster: Cluster) -> None:
    resolver = ClusterResolver(cluster)
    response = ask(resolver, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert answers(response) == {"0 100 80 web.default.svc.cluster.local."}
    assert answers(ask(resolver, "_dns._udp.web.default.svc.cluster.local", "SRV")) == {
        "0 100 53 web.default.svc.cluster.local."}
    # The port is named for one protocol only.
    assert ask(resolver, "_http._udp.web.default.svc.cluster.local", "SRV").rcode() == \
        dns.rcode.NXDOMAIN


def test_srv_of_a_headless_service_is_one_per_pod_with_its_address(cluster: Cluster) -> None:
    response = ask(ClusterResolver(cluster), "_pg._tcp.db.prod.svc.cluster.local", "SRV")
    assert answers(response) == {
        "0 50 5433 db-0.db.prod.svc.cluster.local.",
        "0 50 5433 10-88-2-9.db.prod.svc.cluster.local.",
    }
    glue = {(r.name.to_text(), r.rdtype, r[0].to_text()) for r in response.additional}
    assert glue == {
        ("db-0.db.prod.svc.cluster.local.", dns.rdatatype.A, "10.88.1.7"),
        ("10-88-2-9.db.prod.svc.cluster.local.", dns.rdatatype.A, "10.88.2.9"),
    }


def test_pod_names_are_their_dashed_address(cluster: Cluster) -> None:
    resolver = ClusterResolver(cluster)
    assert answers(ask(resolver, "10-88-0-5.default.pod.cluster.local")) == {"10.88.0.5"}
    assert answers(ask(resolver, "10-88-0-5.any.pod.cluster.local")) == {"10.88.0.5"}
    for bad in ("10-88-0.default", "10-88-0-300.default", "web.default", "1-2-3-4.a.b"):
        assert ask(resolver, f"{bad}.pod.cluster.local").rcode() == dns.rcode.NXDOMAIN, bad
    assert is_nodata(ask(resolver, "10-88-0-5.default.pod.cluster.local", "AAAA"))


@pytest.mark.parametrize("name", [
    "web.default.svc.cluster.local",
    "db.prod.svc.cluster.local",
    "db-0.db.prod.svc.cluster.local",
    "_tcp.db.prod.svc.cluster.local",  # an empty non-terminal above an SRV name
    "prod.svc.cluster.local",
    "svc.cluster.local",
    "pod.cluster.local",
    "cluster.local",
])
def test_other_types_of_existing_names_are_nodata_with_the_soa(cluster: Cluster,
                                                               name: str) -> None:
    for rdtype in ("AAAA", "MX", "TXT"):
        assert is_nodata(ask(ClusterResolver(cluster), name, rdtype)), (name, rdtype)


@pytest.mark.parametrize("name", [
    "nothing.default.svc.cluster.local",
    "web.nowhere.svc.cluster.local",
    "nowhere.svc.cluster.local",
    "_web._tcp.web.default.svc.cluster.local",
    "a.b.web.default.svc.cluster.local",
    "other.cluster.local",
    "x.svc.other.cluster.local",
])
def test_missing_names_under_the_domain_are_nxdomain_with_the_soa(cluster: Cluster,
                                                                  name: str) -> None:
    response = ask(ClusterResolver(cluster), name)
    assert response.rcode() == dns.rcode.NXDOMAIN and not response.answer
    assert soa_in_authority(response)
    assert response.authority[0][0].minimum == TTL  # absence is remembered as briefly


def test_the_domains_soa_answers_at_the_apex(cluster: Cluster) -> None:
    response = ask(ClusterResolver(cluster), "cluster.local", "SOA")
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.SOA]


def test_a_service_without_endpoints_or_address_exists_with_no_records() -> None:
    c = Cluster()
    c.add(service("empty", cluster_ip="None"))
    c.add(service("pending", cluster_ip=""))
    resolver = ClusterResolver(c)
    assert is_nodata(ask(resolver, "empty.default.svc.cluster.local"))
    assert is_nodata(ask(resolver, "pending.default.svc.cluster.local"))


def test_answers_follow_the_snapshot_as_it_changes(cluster: Cluster) -> None:
    resolver = ClusterResolver(cluster)
    assert ask(resolver, "new.default.svc.cluster.local").rcode() == dns.rcode.NXDOMAIN
    cluster.add(service("new", cluster_ip="10.96.0.99"))
    assert answers(ask(resolver, "new.default.svc.cluster.local")) == {"10.96.0.99"}
    cluster.endpoints["prod", "db"] = endpoints("db", [("10.88.4.4", "")], namespace="prod")
    assert answers(ask(resolver, "db.prod.svc.cluster.local")) == {"10.88.4.4"}


def test_any_answers_every_record_of_the_name(cluster: Cluster) -> None:
    response = ask(ClusterResolver(cluster), "web.default.svc.cluster.local", "ANY")
    assert answers(response) == {"10.96.0.20"}


def test_another_domain_is_honoured() -> None:
    c = Cluster()
    c.add(service("web"))
    resolver = ClusterResolver(c, "Example.Test")
    query = dns.message.make_query("web.default.svc.example.test", "A")
    assert answers(resolver.resolve(query)) == {"10.96.0.20"}
    assert not resolver.handles(dns.name.from_text("web.default.svc.cluster.local"))


def test_names_outside_the_domain_are_not_handled(cluster: Cluster) -> None:
    resolver = ClusterResolver(cluster)
    for name in ("example.org", "local", "notcluster.local", "cluster.local.evil.test"):
        assert not resolver.handles(dns.name.from_text(name)), name
    assert cluster.calls == 0  # no snapshot taken for a name not ours


def test_other_classes_and_zone_transfers_are_refused(cluster: Cluster) -> None:
    resolver = ClusterResolver(cluster)
    chaos = dns.message.make_query("web.default.svc.cluster.local", "A", "CH")
    assert resolver.resolve(chaos).rcode() == dns.rcode.REFUSED
    axfr = dns.message.make_query("cluster.local", "AXFR")
    assert resolver.resolve(axfr).rcode() == dns.rcode.REFUSED


def test_the_response_is_a_reply_to_the_query(cluster: Cluster) -> None:
    query = dns.message.make_query("web.default.svc.cluster.local", "A", use_edns=0)
    response = ClusterResolver(cluster).resolve(query)
    assert query.is_response(response) and response.edns == 0
    assert response.flags & dns.flags.RD and response.flags & dns.flags.RA


def test_pod_hostnames_that_make_no_dns_name_are_left_out() -> None:
    c = Cluster()
    c.add(service("h", cluster_ip="None"),
          endpoints("h", [("10.88.0.2", "x" * 70), ("10.88.0.3", "ok")]))
    resolver = ClusterResolver(c)
    assert answers(ask(resolver, "h.default.svc.cluster.local")) == {"10.88.0.3"}
    assert answers(ask(resolver, "_http._tcp.h.default.svc.cluster.local", "SRV")) == {
        "0 100 8080 ok.h.default.svc.cluster.local."}


def test_rrsets_are_well_formed(cluster: Cluster) -> None:
    response = ask(ClusterResolver(cluster), "_pg._tcp.db.prod.svc.cluster.local", "SRV")
    rrset = response.answer[0]
    assert isinstance(rrset, dns.rrset.RRset) and rrset.ttl == TTL
    wire = response.to_wire()
    assert dns.message.from_wire(wire).answer == response.answer
