"""The cluster's DNS names, answered from a snapshot of Services and Endpoints.

Names follow Kubernetes' DNS specification, under the cluster domain ``D``
(``cluster.local`` by default):

    <svc>.<ns>.svc.D                    A: the ClusterIP; headless: every ready pod's IP
    _<port>._<proto>.<svc>.<ns>.svc.D   SRV for each named port: the Service's port and
                                        name; headless: one per pod, its target port and
                                        <host>.<svc>.<ns>.svc.D (A records alongside)
    <host>.<svc>.<ns>.svc.D             A: a headless Service's pod, <host> being its
                                        hostname or its IP with dashes (10-88-0-5)
    <a-b-c-d>.<ns>.pod.D                A: a.b.c.d

A name that exists but has no record of the type asked is answered NOERROR with no
answer (NODATA), a name under the domain that does not exist NXDOMAIN; both carry the
domain's SOA, whose minimum TTL bounds how long resolvers remember the absence.
Nothing here does I/O: ``ClusterResolver.resolve`` turns one query into its response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address
from typing import TypeAlias

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.SRV
import dns.rrset

from agent.network.config import DEFAULT_CLUSTER_DOMAIN
from proto.podium.v1 import service_pb2

DEFAULT_DOMAIN = DEFAULT_CLUSTER_DOMAIN
TTL = 5  # seconds: short, so a pod sees a Service's new endpoints quickly
HEADLESS = "None"  # a Service's clusterIP for "no virtual address, the pods' own"
# The SOA's timers matter little (nothing transfers the zone); its minimum is the
# negative-caching TTL (RFC 2308), kept as short as the records'.
_SOA_TIMERS = (7200, 1800, 86400, TTL)  # refresh, retry, expire, minimum
_SRV_PROTOCOLS = {"": "_tcp", "TCP": "_tcp", "UDP": "_udp", "SCTP": "_sctp"}

ServiceKey: TypeAlias = tuple[str, str]  # (namespace, name)
Snapshot: TypeAlias = tuple[
    Mapping[ServiceKey, service_pb2.Service], Mapping[ServiceKey, service_pb2.Endpoints]
]
SnapshotSource: TypeAlias = Callable[[], Snapshot]

# The records of one Service: owner name → type → records.
_Records: TypeAlias = dict[dns.name.Name, dict[int, list[dns.rdata.Rdata]]]


class ClusterResolver:
    """Answers queries for names under the cluster domain from ``snapshot()``.

    ``snapshot`` is called once per query, so the answers follow the Services and
    Endpoints as they change; it should be cheap (a catalog's current maps).
    """

    def __init__(self, snapshot: SnapshotSource, domain: str = DEFAULT_DOMAIN) -> None:
        self.snapshot = snapshot
        self.domain = dns.name.from_text(domain)
        self._soa = dns.rrset.from_rdata(self.domain, TTL, _soa_rdata(self.domain))

    def handles(self, qname: dns.name.Name) -> bool:
        """Whether ``qname`` is the cluster domain or a name under it (any case)."""
        return qname.is_subdomain(self.domain)

    def resolve(self, query: dns.message.Message) -> dns.message.Message:
        """The authoritative response to a one-question query under the domain."""
        response = dns.message.make_response(query, recursion_available=True)
        response.flags |= dns.flags.AA
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass != dns.rdataclass.IN or qtype in (dns.rdatatype.AXFR,
                                                               dns.rdatatype.IXFR):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return response
        records = self._records_near(qname)
        if records is None or not _exists(records, qname):
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa)
            return response
        answers = _matching(records.get(qname, {}), qtype)
        if not answers:
            response.authority.append(self._soa)  # NODATA
            return response
        for rdtype, rdatas in answers.items():
            # The owner is the name as asked (its case kept), as resolvers expect.
            response.answer.append(dns.rrset.from_rdata_list(qname, TTL, rdatas))
            if rdtype == dns.rdatatype.SRV:
                response.additional.extend(_glue(records, rdatas))
        return response

    def _records_near(self, qname: dns.name.Name) -> _Records | None:
        """The records of the part of the domain ``qname`` falls in; None: no such part.

        Only the Service or pod the name points at is looked at, so a query costs the
        same whatever the number of Services.
        """
        labels = [label.decode("ascii", "replace").lower()
                  for label in qname.relativize(self.domain).labels]
        labels.reverse()  # from the domain outwards: svc, <ns>, <svc>, ...
        apex: _Records = {self.domain: {dns.rdatatype.SOA: [self._soa[0]]}}
        if not labels:
            return apex
        kind = labels[0]
        if kind == "pod":
            if len(labels) == 3:
                address = _dashed_address(labels[2])
                if address is None:
                    return None
                return {qname: {dns.rdatatype.A: [_a(address)]}}
            return {qname: {}} if len(labels) <= 2 else None  # pod., <ns>.pod.: no records
        if kind != "svc":
            return None
        if len(labels) == 1:
            return {qname: {}}
        services, endpoints = self.snapshot()
        namespace = labels[1]
        if len(labels) == 2:
            if any(ns == namespace for ns, _ in services):
                return {qname: {}}
            return None
        key = (namespace, labels[2])
        service = services.get(key)
        if service is None:
            return None
        base = dns.name.Name((labels[2], namespace, "svc", *_text_labels(self.domain)))
        return service_records(base, service, endpoints.get(key))


def service_records(name: dns.name.Name, service: service_pb2.Service,
                    endpoints: service_pb2.Endpoints | None) -> _Records:
    """Every record of one Service whose DNS name is ``name``."""
    records: _Records = {name: {}}

    def add(owner: dns.name.Name, rdata: dns.rdata.Rdata) -> None:
        existing = records.setdefault(owner, {}).setdefault(rdata.rdtype, [])
        if rdata not in existing:
            existing.append(rdata)

    spec = service.spec
    if spec.cluster_ip != HEADLESS:
        address = _ipv4(spec.cluster_ip)
        if address is not None:
            add(name, _a(address))
        for port in spec.ports:
            srv = _srv_name(port.name, port.protocol, name)
            if srv is not None:
                add(srv, _srv(port.port, name, 1))
        return records
    pods = list(_pod_addresses(service, endpoints, name))
    for address, host in pods:
        add(name, _a(address))
        add(host, _a(address))
    for subset in endpoints.subsets if endpoints is not None else ():
        hosts = [host for _, host in _subset_addresses(service, subset, name)]
        for endpoint_port in subset.ports:
            srv = _srv_name(endpoint_port.name, endpoint_port.protocol, name)
            if srv is not None:
                for host in hosts:
                    add(srv, _srv(endpoint_port.port, host, len(hosts)))
    return records


def _pod_addresses(service: service_pb2.Service, endpoints: service_pb2.Endpoints | None,
                   name: dns.name.Name) -> Iterable[tuple[IPv4Address, dns.name.Name]]:
    for subset in endpoints.subsets if endpoints is not None else ():
        yield from _subset_addresses(service, subset, name)


def _subset_addresses(service: service_pb2.Service, subset: service_pb2.EndpointSubset,
                      name: dns.name.Name) -> list[tuple[IPv4Address, dns.name.Name]]:
    """The subset's pods: (IP, <host>.<name>); not-ready ones only if published.

    A pod whose hostname makes no valid DNS name is left out rather than failing
    every query for the Service.
    """
    addresses = list(subset.addresses)
    if service.spec.publish_not_ready_addresses:
        addresses += subset.not_ready_addresses
    found = []
    for endpoint in addresses:
        address = _ipv4(endpoint.ip)
        if address is None:
            continue
        host = endpoint.hostname.lower() or str(address).replace(".", "-")
        try:
            found.append((address, dns.name.Name((host, *name.labels))))
        except dns.exception.DNSException:
            continue
    return found


def _exists(records: _Records, qname: dns.name.Name) -> bool:
    """``qname`` owns records or is an empty non-terminal above a name that does."""
    return any(owner.is_subdomain(qname) for owner in records)


def _matching(at_name: Mapping[int, list[dns.rdata.Rdata]],
              qtype: int) -> dict[int, list[dns.rdata.Rdata]]:
    if qtype == dns.rdatatype.ANY:
        return {t: r for t, r in at_name.items() if r}
    found = at_name.get(qtype)
    return {qtype: found} if found else {}


def _glue(records: _Records, srvs: Iterable[dns.rdata.Rdata]) -> list[dns.rrset.RRset]:
    """The A records of the SRV targets, so a client needs no second query."""
    glue: list[dns.rrset.RRset] = []
    for srv in srvs:
        assert isinstance(srv, dns.rdtypes.IN.SRV.SRV)
        addresses = records.get(srv.target, {}).get(dns.rdatatype.A)
        if addresses and all(srv.target != rrset.name for rrset in glue):
            glue.append(dns.rrset.from_rdata_list(srv.target, TTL, addresses))
    return glue


def _srv_name(port_name: str, protocol: str, service: dns.name.Name) -> dns.name.Name | None:
    """``_<port>._<proto>.<service>``; None for an unnamed port (it has no SRV record)."""
    proto = _SRV_PROTOCOLS.get(protocol.upper())
    if not port_name or proto is None:
        return None
    return dns.name.Name(("_" + port_name.lower(), proto, *_text_labels(service)))


def _text_labels(name: dns.name.Name) -> tuple[str, ...]:
    return tuple(label.decode("ascii") for label in name.labels)


def _dashed_address(label: str) -> IPv4Address | None:
    """``10-88-0-5`` → 10.88.0.5; None when the label is no such address."""
    parts = label.split("-")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        return None
    return _ipv4(".".join(parts))


def _ipv4(text: str) -> IPv4Address | None:
    try:
        return IPv4Address(text)
    except ValueError:
        return None


def _a(address: IPv4Address) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, str(address))


def _srv(port: int, target: dns.name.Name, count: int) -> dns.rdata.Rdata:
    # Equal priority, the weight shared out as CoreDNS does: clients pick evenly.
    weight = max(100 // max(count, 1), 1)
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV,
                               f"0 {weight} {port} {target.to_text()}")


def _soa_rdata(domain: dns.name.Name) -> dns.rdata.Rdata:
    server = dns.name.Name(("ns", "dns", *_text_labels(domain)))
    mailbox = dns.name.Name(("hostmaster", *_text_labels(domain)))
    timers = " ".join(str(t) for t in _SOA_TIMERS)
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                               f"{server.to_text()} {mailbox.to_text()} 1 {timers}")
