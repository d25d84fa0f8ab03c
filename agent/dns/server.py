"""``DnsServer``: the node's cluster DNS, over UDP and TCP, on one address and port.

Names under the cluster domain are answered from ``ClusterResolver``; every other
name is forwarded to the node's own resolvers, one after another, each given a short
timeout (SERVFAIL when none answers, REFUSED when there are none). Pods reach the
server as 10.96.0.10: each node's nftables DNAT that address to its own server, on
the bridge's gateway address, so no lookup crosses nodes.

Threads: one loop accepts TCP connections and reads UDP datagrams, answering cluster
names itself; datagrams to forward go to a small pool, so a slow upstream never holds
up cluster names, and each TCP connection has a thread of its own, bounded in number
and idle time. Whatever arrives (garbage, half a header, two questions, an UPDATE)
gets an error response when it carries an ID, is dropped otherwise, and never stops
the server.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_address

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode

from agent.dns.records import DEFAULT_DOMAIN, ClusterResolver, SnapshotSource
from agent.errors import NetworkError

log = logging.getLogger("podium.agent")

DEFAULT_PORT = 53
FORWARD_TIMEOUT = 2.0  # seconds per upstream: a pod's resolver gives up after 5
UDP_LIMIT = 512  # an answer without EDNS fits this, else it is truncated (RFC 1035)
OUR_PAYLOAD = 1232  # the EDNS buffer size we advertise (the DNS flag day's figure)
_WORKERS = 8  # threads forwarding datagrams
_MAX_PENDING = 256  # datagrams waiting to be forwarded; past it, new ones are dropped
_MAX_TCP = 32  # TCP connections open at once; past it, new ones are closed
_TCP_IDLE = 5.0  # seconds a TCP connection may sit without sending a whole query
_HEADER = 12  # bytes in a DNS header


class DnsError(NetworkError):
    """The DNS server could not start (its address or port unusable)."""


class DnsServer:
    """Cluster names from ``records`` (a snapshot callable), the rest forwarded.

    ``upstreams`` are addresses, each optionally with a port (``192.0.2.53``,
    ``127.0.0.1:5353``, ``[2001:db8::1]:53``). ``start`` creates the sockets in the
    calling thread's network namespace (wrap it in ``run_in_netns`` for another);
    forwarded queries leave from the namespace of the thread that answers them.
    """

    def __init__(self, address: str, port: int, records: SnapshotSource,
                 upstreams: Sequence[str], domain: str = DEFAULT_DOMAIN,
                 forward_timeout: float = FORWARD_TIMEOUT) -> None:
        try:
            self.family = socket.AF_INET6 if ip_address(address).version == 6 else socket.AF_INET
        except ValueError:
            raise DnsError(f"DNS server address {address!r}: not an IP address") from None
        self.address = address
        self._port = port
        self.resolver = ClusterResolver(records, domain)
        self.upstreams = [parse_upstream(u) for u in upstreams]
        self.forward_timeout = forward_timeout
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._loop: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        """The port bound (the one asked for until ``start``; port 0 picks one)."""
        return self._port

    def start(self) -> None:
        """Bind UDP and TCP and start answering; DnsError if the address is unusable."""
        if self._loop is not None:
            return
        self._bind()
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="dns-udp")
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping.clear()
        self._loop = threading.Thread(target=self._serve, name="dns-loop", daemon=True)
        self._loop.start()

    def close(self) -> None:
        """Stop answering and release the sockets; safe to repeat."""
        self._stopping.set()
        if self._loop is not None:
            os.write(self._wake_w, b"x")
            self._loop.join()
            self._loop = None
            os.close(self._wake_r)
            os.close(self._wake_w)
        with self._lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes the connection's thread
            except OSError:
                pass
        for _, thread in connections:
            thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None

    # Answers ---------------------------------------------------------------------

    def answer(self, wire: bytes, udp: bool) -> bytes | None:
        """The response to one query in wire form; None: send nothing."""
        query, early = _read_query(wire)
        return early if query is None else self._reply(query, udp)

    def _forwards(self, query: dns.message.Message) -> bool:
        """Whether answering ``query`` means asking an upstream (and so may be slow)."""
        return (query.opcode() == dns.opcode.QUERY and len(query.question) == 1
                and not self.resolver.handles(query.question[0].name))

    def _reply(self, query: dns.message.Message, udp: bool) -> bytes:
        try:
            response = self._respond(query)
        except Exception:
            log.exception("DNS server %s:%d: answering %s", self.address, self.port,
                          query.question[0].name if query.question else "?")
            response = _error(query, dns.rcode.SERVFAIL)
        limit = 65535
        if udp:
            limit = UDP_LIMIT if query.edns < 0 else max(UDP_LIMIT, query.payload)
        try:
            return response.to_wire(max_size=limit, prefer_truncation=True)
        except Exception:  # a forwarded answer we cannot render again
            log.exception("DNS server %s:%d: rendering the answer", self.address, self.port)
            return _error(query, dns.rcode.SERVFAIL).to_wire()

    def _respond(self, query: dns.message.Message) -> dns.message.Message:
        if query.opcode() != dns.opcode.QUERY:
            return _error(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return _error(query, dns.rcode.FORMERR)
        if self.resolver.handles(query.question[0].name):
            return self.resolver.resolve(query)
        return self._forward(query)

    def _forward(self, query: dns.message.Message) -> dns.message.Message:
        if not self.upstreams:
            return _error(query, dns.rcode.REFUSED)
        for host, port in self.upstreams:
            try:
                response, _ = dns.query.udp_with_fallback(
                    query, host, timeout=self.forward_timeout, port=port)
                return response
            except (dns.exception.DNSException, OSError, ValueError) as e:
                log.debug("DNS upstream %s:%d: %s", host, port, e)
        return _error(query, dns.rcode.SERVFAIL)

    # Sockets ---------------------------------------------------------------------

    def _bind(self) -> None:
        where = f"DNS server on {self.address}:{self._port}"
        udp = tcp = None
        try:
            # Port 0: the kernel picks a free UDP port, which TCP may hold already.
            for _ in range(10 if self._port == 0 else 1):
                udp = socket.socket(self.family, socket.SOCK_DGRAM)
                udp.bind((self.address, self._port))
                port = udp.getsockname()[1]
                tcp = socket.socket(self.family, socket.SOCK_STREAM)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    tcp.bind((self.address, port))
                except OSError as e:
                    if self._port != 0 or e.errno != errno.EADDRINUSE:
                        raise
                    udp.close()
                    tcp.close()
                    udp = tcp = None
                    continue
                tcp.listen(64)
                break
        except OSError as e:
            for sock in (udp, tcp):
                if sock is not None:
                    sock.close()
            raise DnsError(f"{where}: cannot bind: {e.strerror or e}") from e
        if udp is None or tcp is None:
            raise DnsError(f"{where}: no port free for both UDP and TCP")
        udp.setblocking(False)
        tcp.setblocking(False)
        self._udp, self._tcp, self._port = udp, tcp, port

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ)
            selector.register(self._tcp, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._udp:
                        self._receive_datagram()
                    elif key.fileobj is self._tcp:
                        self._accept()

    def _receive_datagram(self) -> None:
        assert self._udp is not None and self._pool is not None
        try:
            data, peer = self._udp.recvfrom(65535)
        except OSError:
            return  # nothing there after all, or an ICMP error from an earlier send
        query, early = _read_query(data)
        if query is not None and self._forwards(query):
            # Forwards wait on the network: the pool takes them, so cluster names and
            # errors, answered here at once, never queue behind a slow upstream.
            with self._lock:
                if self._pending >= _MAX_PENDING:
                    return  # overloaded: the client retries
                self._pending += 1
            self._pool.submit(self._forward_datagram, query, peer)
            return
        reply = early if query is None else self._reply(query, udp=True)
        self._send(reply, peer)

    def _forward_datagram(self, query: dns.message.Message, peer: tuple[str, int]) -> None:
        try:
            self._send(self._reply(query, udp=True), peer)
        finally:
            with self._lock:
                self._pending -= 1

    def _send(self, reply: bytes | None, peer: tuple[str, int]) -> None:
        udp = self._udp
        if reply is None or udp is None:
            return
        try:
            udp.sendto(reply, peer)
        except OSError:
            pass  # the client is gone or the buffer full: it retries

    def _accept(self) -> None:
        assert self._tcp is not None
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        with self._lock:
            if len(self._connections) >= _MAX_TCP or self._stopping.is_set():
                conn.close()
                return
            thread = threading.Thread(target=self._serve_connection, args=(conn,),
                                      name="dns-tcp", daemon=True)
            self._connections[conn] = thread
        thread.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        """Length-prefixed queries, answered in order until EOF, idleness or garbage."""
        try:
            conn.setblocking(True)
            conn.settimeout(_TCP_IDLE)
            while not self._stopping.is_set():
                prefix = _read_exactly(conn, 2)
                if prefix is None:
                    return
                wire = _read_exactly(conn, int.from_bytes(prefix, "big"))
                if wire is None:
                    return
                reply = self.answer(wire, udp=False)
                if reply is None:
                    return
                dns.query.send_tcp(conn, reply)
        except (OSError, dns.exception.DNSException):
            pass  # the client went away or stalled
        finally:
            conn.close()
            with self._lock:
                self._connections.pop(conn, None)


def parse_upstream(text: str) -> tuple[str, int]:
    """``host`` or ``host:port`` (``[v6]:port``) → (host, port); ValueError names it."""
    try:
        return str(ip_address(text)), DEFAULT_PORT
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError
        return str(ip_address(host)), int(port)
    except ValueError:
        raise DnsError(f"DNS upstream {text!r}: not an address or address:port") from None


def _read_query(wire: bytes) -> tuple[dns.message.Message | None, bytes | None]:
    """(the query, None), or (None, what to send back instead: FORMERR or nothing)."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # any malformation dnspython finds, whatever it raises
        return None, _format_error(wire)
    if query.flags & dns.flags.QR:
        return None, None  # a response sent to us: answering could start a loop
    return query, None


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(rcode)
    return response


def _format_error(wire: bytes) -> bytes | None:
    """FORMERR for bytes dnspython could not read, if they hold an ID to answer to."""
    if len(wire) < 2:
        return None
    header = wire[:_HEADER]
    flags = int.from_bytes(header[2:4], "big") if len(header) >= 4 else 0
    if flags & dns.flags.QR:
        return None
    response = dns.message.Message(id=int.from_bytes(header[:2], "big"))
    response.flags = dns.flags.QR | dns.flags.RA | (flags & dns.flags.RD)
    try:
        response.set_opcode(dns.opcode.from_flags(flags))
    except ValueError:
        pass  # an opcode with no name: answer as to a QUERY
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()


def _read_exactly(conn: socket.socket, count: int) -> bytes | None:
    """``count`` bytes from the connection; None at EOF before them."""
    chunks = bytearray()
    while len(chunks) < count:
        chunk = conn.recv(count - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)
