"""The cluster DNS server on loopback: UDP and TCP, truncation, bad input, forwarding."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dns import DnsError, DnsServer, Snapshot, parse_upstream
from proto.podium.v1 import meta_pb2, service_pb2

LOOPBACK = "127.0.0.1"
WAIT = 5.0  # seconds a test waits for an answer before calling it lost


def snapshot() -> Snapshot:
    web = service_pb2.Service(
        metadata=meta_pb2.ObjectMeta(name="web", namespace="default"),
        spec=service_pb2.ServiceSpec(cluster_ip="10.96.0.20",
                                     ports=[service_pb2.ServicePort(name="http", port=80)]))
    many = service_pb2.Service(metadata=meta_pb2.ObjectMeta(name="many", namespace="default"),
                               spec=service_pb2.ServiceSpec(cluster_ip="None"))
    many_eps = service_pb2.Endpoints(
        metadata=many.metadata,
        subsets=[service_pb2.EndpointSubset(addresses=[
            service_pb2.EndpointAddress(ip=f"10.88.0.{i}") for i in range(2, 62)])])
    return ({("default", "web"): web, ("default", "many"): many},
            {("default", "many"): many_eps})


class Upstream:
    """A tiny resolver on loopback: ``*.example.test`` A 192.0.2.7, others NXDOMAIN."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                wire, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            name = query.question[0].name
            self.asked.append(name.to_text())
            response = dns.message.make_response(query, recursion_available=True)
            if name.to_text().endswith(".example.test."):
                response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.7"))
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def silent() -> Iterator[str]:
    """An upstream address that takes queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    yield f"{LOOPBACK}:{sock.getsockname()[1]}"
    sock.close()


def started(upstreams: list[str], timeout: float = 0.3) -> DnsServer:
    server = DnsServer(LOOPBACK, 0, snapshot, upstreams, forward_timeout=timeout)
    server.start()
    return server


@pytest.fixture
def server(upstream: Upstream) -> Iterator[DnsServer]:
    s = started([upstream.address])
    yield s
    s.close()


def udp(server: DnsServer, query: dns.message.Message) -> dns.message.Message:
    return dns.query.udp(query, LOOPBACK, port=server.port, timeout=WAIT)


def tcp(server: DnsServer, query: dns.message.Message) -> dns.message.Message:
    return dns.query.tcp(query, LOOPBACK, port=server.port, timeout=WAIT)


def raw_udp(server: DnsServer, data: bytes, wait: float = WAIT) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        sock.sendto(data, (LOOPBACK, server.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def web_query() -> dns.message.Message:
    return dns.message.make_query("web.default.svc.cluster.local", "A")


def addresses(response: dns.message.Message) -> set[str]:
    return {r.to_text() for rrset in response.answer for r in rrset}


def still_answers(server: DnsServer) -> None:
    assert addresses(udp(server, web_query())) == {"10.96.0.20"}
    assert addresses(tcp(server, web_query())) == {"10.96.0.20"}


def test_cluster_names_over_udp_and_tcp(server: DnsServer, upstream: Upstream) -> None:
    assert server.port != 0
    still_answers(server)
    srv = dns.message.make_query("_http._tcp.web.default.svc.cluster.local", "SRV")
    assert addresses(tcp(server, srv)) == {"0 100 80 web.default.svc.cluster.local."}
    missing = udp(server, dns.message.make_query("gone.default.svc.cluster.local", "A"))
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert upstream.asked == []  # cluster names never leave the node


def test_big_udp_answers_are_truncated_and_whole_over_tcp(server: DnsServer) -> None:
    query = dns.message.make_query("many.default.svc.cluster.local", "A")
    short = udp(server, query)
    assert short.flags & dns.flags.TC and not short.answer
    assert len(short.to_wire()) <= 512
    assert len(addresses(tcp(server, query))) == 60
    # With EDNS the client's buffer size is the limit instead.
    big = dns.message.make_query("many.default.svc.cluster.local", "A", use_edns=0,
                                 payload=4096)
    answer = udp(server, big)
    assert not answer.flags & dns.flags.TC and len(addresses(answer)) == 60
    small = dns.message.make_query("many.default.svc.cluster.local", "A", use_edns=0,
                                   payload=600)
    assert udp(server, small).flags & dns.flags.TC


@pytest.mark.parametrize("data", [
    b"\x12\x34\x01\x00" + b"\xff" * 40,  # counts of records that aren't there
    b"\x12\x34\x01\x00\x00",  # half a header
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www",  # a name cut short
])
def test_garbage_gets_formerr_and_the_server_goes_on(server: DnsServer, data: bytes) -> None:
    reply = raw_udp(server, data)
    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == 0x1234 and response.rcode() == dns.rcode.FORMERR
    assert response.flags & dns.flags.QR
    with socket.create_connection((LOOPBACK, server.port), timeout=WAIT) as conn:
        dns.query.send_tcp(conn, data)
        response, _ = dns.query.receive_tcp(conn, expiration=None)
        assert response.id == 0x1234 and response.rcode() == dns.rcode.FORMERR
        # The connection stays open for the next query.
        dns.query.send_tcp(conn, web_query())
        response, _ = dns.query.receive_tcp(conn, expiration=None)
        assert addresses(response) == {"10.96.0.20"}
    still_answers(server)


def test_what_carries_no_id_or_is_a_response_gets_nothing(server: DnsServer) -> None:
    assert raw_udp(server, b"\x12", wait=0.3) is None
    response = dns.message.make_response(web_query())
    assert raw_udp(server, response.to_wire(), wait=0.3) is None
    still_answers(server)


def test_several_questions_are_formerr_other_opcodes_notimp(server: DnsServer) -> None:
    query = web_query()
    query.find_rrset(query.question, dns.name.from_text("db.default.svc.cluster.local"),
                     dns.rdataclass.IN, dns.rdatatype.A, create=True, force_unique=True)
    assert len(query.question) == 2
    assert udp(server, query).rcode() == dns.rcode.FORMERR
    notify = web_query()
    notify.set_opcode(dns.opcode.NOTIFY)
    response = udp(server, notify)
    assert response.rcode() == dns.rcode.NOTIMP and response.opcode() == dns.opcode.NOTIFY
    empty = dns.message.Message()
    assert tcp(server, empty).rcode() == dns.rcode.FORMERR
    still_answers(server)


def test_a_stalled_tcp_client_holds_up_no_one(server: DnsServer) -> None:
    with socket.create_connection((LOOPBACK, server.port), timeout=WAIT) as conn:
        conn.sendall(b"\x00")  # half a length prefix, then nothing
        still_answers(server)


def test_other_names_are_forwarded(server: DnsServer, upstream: Upstream) -> None:
    response = udp(server, dns.message.make_query("www.example.test", "A"))
    assert addresses(response) == {"192.0.2.7"}
    assert response.rcode() == dns.rcode.NOERROR
    missing = tcp(server, dns.message.make_query("nothing.invalid", "A"))
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert upstream.asked == ["www.example.test.", "nothing.invalid."]


def test_upstreams_are_tried_in_turn(upstream: Upstream, silent: str) -> None:
    server = started([silent, upstream.address])
    try:
        response = udp(server, dns.message.make_query("a.example.test", "A"))
        assert addresses(response) == {"192.0.2.7"}
    finally:
        server.close()


def test_servfail_when_no_upstream_answers(silent: str) -> None:
    server = started([silent])
    try:
        query = dns.message.make_query("a.example.test", "A")
        assert udp(server, query).rcode() == dns.rcode.SERVFAIL
        still_answers(server)
    finally:
        server.close()


def test_a_slow_upstream_holds_up_no_cluster_name(silent: str) -> None:
    # Each forward waits longer than the client below does, so an answer queued
    # behind them would come too late for it.
    server = started([silent], timeout=WAIT + 1)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(12):  # more forwards than the server has threads for them
                query = dns.message.make_query(f"q{i}.example.test", "A")
                sock.sendto(query.to_wire(), (LOOPBACK, server.port))
            assert addresses(udp(server, web_query())) == {"10.96.0.20"}
    finally:
        server.close()


def test_refused_without_upstreams() -> None:
    server = started([])
    try:
        query = dns.message.make_query("a.example.test", "A")
        assert udp(server, query).rcode() == dns.rcode.REFUSED
        still_answers(server)
    finally:
        server.close()


def test_a_failing_snapshot_is_servfail_not_a_dead_server() -> None:
    def broken() -> Snapshot:
        raise RuntimeError("catalog gone")

    server = DnsServer(LOOPBACK, 0, broken, [])
    server.start()
    try:
        assert udp(server, web_query()).rcode() == dns.rcode.SERVFAIL
        # Names that need no snapshot still work.
        pod = dns.message.make_query("10-88-0-5.default.pod.cluster.local", "A")
        assert addresses(udp(server, pod)) == {"10.88.0.5"}
    finally:
        server.close()


def test_an_unusable_address_is_a_clear_error() -> None:
    taken = started([])
    try:
        with pytest.raises(DnsError, match=rf"127\.0\.0\.1:{taken.port}"):
            DnsServer(LOOPBACK, taken.port, snapshot, []).start()
    finally:
        taken.close()
    # An address no interface holds (documentation range; nothing is sent).
    with pytest.raises(DnsError, match=r"192\.0\.2\.1:0: cannot bind"):
        DnsServer("192.0.2.1", 0, snapshot, []).start()
    with pytest.raises(DnsError, match="not an IP address"):
        DnsServer("localhost", 0, snapshot, [])


def test_close_releases_the_port_and_is_repeatable() -> None:
    server = started([])
    port = server.port
    server.close()
    server.close()
    again = DnsServer(LOOPBACK, port, snapshot, [])
    again.start()
    again.close()


def test_upstream_forms() -> None:
    assert parse_upstream("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_upstream("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_upstream("[2001:db8::1]:54") == ("2001:db8::1", 54)
    assert parse_upstream("2001:db8::1") == ("2001:db8::1", 53)
    for bad in ("resolver", "127.0.0.1:", "127.0.0.1:99999", "[::1]"):
        with pytest.raises(DnsError, match="DNS upstream"):
            parse_upstream(bad)


def check_reply(data: bytes, udp: bool) -> None:
    reply = DnsServer(LOOPBACK, 0, snapshot, []).answer(data, udp=udp)
    if reply is None:
        return
    response = dns.message.from_wire(reply)  # whatever came in, what goes out parses
    assert response.flags & dns.flags.QR and response.id == int.from_bytes(data[:2], "big")
    if udp:
        assert len(reply) <= 512 or response.edns >= 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_any_bytes_get_a_parseable_reply_or_none(data: bytes, udp: bool) -> None:
    check_reply(data, udp)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(0, 80))
def test_damaged_queries_get_a_parseable_reply_or_none(
        flips: list[tuple[int, int]], cut: int) -> None:
    query = dns.message.make_query("_http._tcp.web.default.svc.cluster.local", "SRV",
                                   use_edns=0)
    wire = bytearray(query.to_wire())
    for at, value in flips:
        wire[at % len(wire)] = value
    check_reply(bytes(wire[:len(wire) - cut]), udp=True)
