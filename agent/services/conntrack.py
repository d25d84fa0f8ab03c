"""Clearing the conntrack entries of UDP endpoints a Service no longer has.

A UDP "connection" is a conntrack entry that lives while packets keep coming, and
its DNAT decision lives with it: a DNS client or a UDP stream that keeps one socket
would reach a removed endpoint for good (the new rules only see new flows). After
the table changed, ``flush_stale_flows`` deletes those entries in the node's network
namespace, so the next packet is a new flow and the rules pick again — what
kube-proxy does. Which entries go is decided by ``is_stale``, a pure function.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, NamedTuple

from agent.errors import NetworkError
from agent.network import run_in_netns
from agent.services.rules import StaleFlows


class Flow(NamedTuple):
    """What a conntrack entry tells about where a UDP flow went."""

    destination: IPv4Address  # the client's original destination
    destination_port: int
    replier: IPv4Address  # the source of the replies: the endpoint, if DNAT-ed
    replier_port: int


def is_stale(flow: Flow, stale: Iterable[StaleFlows]) -> bool:
    """True if ``flow`` was DNAT-ed to one of the ``stale`` endpoints through that
    Service port: to one of its addresses and port, or to its NodePort on any address."""
    if flow.destination == flow.replier:
        return False  # not DNAT-ed: a client talking to the pod itself keeps its flow
    for s in stale:
        if (flow.replier, flow.replier_port) != s.endpoint:
            continue
        if flow.destination_port == s.port and flow.destination in s.destinations:
            return True
        if s.node_port and flow.destination_port == s.node_port:
            return True
    return False


def flush_stale_flows(stale: Sequence[StaleFlows], netns: Path | None = None) -> int:
    """Delete the UDP conntrack entries ``is_stale`` picks, in ``netns`` (None: the
    caller's); how many went. NetworkError if conntrack can't be read or written
    (e.g. no nf_conntrack_netlink)."""
    if not stale:
        return 0
    where = f"network namespace {netns}" if netns is not None else "the node's namespace"
    return run_in_netns(netns, lambda: _flush(stale, where))


def _flush(stale: Sequence[StaleFlows], where: str) -> int:
    from pyroute2 import Conntrack
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    try:
        with Conntrack() as ct:
            # Filtered by the kernel on the original tuple's protocol only (the reply
            # tuple filter is broken on some kernels); the rest is matched here.
            udp = NFCTAttrTuple(proto=socket.IPPROTO_UDP)
            doomed = [entry for entry in ct.dump_entries(tuple_orig=udp)
                      if (flow := flow_of(entry)) is not None and is_stale(flow, stale)]
            deleted = 0
            for entry in doomed:
                try:
                    ct.delete(entry)
                except NetlinkError as e:
                    if e.code != errno.ENOENT:  # ENOENT: it expired meanwhile
                        raise
                else:
                    deleted += 1
            return deleted
    except NetlinkError as e:
        message = e.args[1] if len(e.args) > 1 else str(e)
        raise NetworkError(f"conntrack in {where}: {message}; stale UDP flows to removed "
                           "endpoints stay until they go idle") from e
    except OSError as e:
        raise NetworkError(f"conntrack in {where}: {e.strerror or e}; stale UDP flows to "
                           "removed endpoints stay until they go idle") from e


def flow_of(entry: Any) -> Flow | None:
    """A pyroute2 ``ConntrackEntry`` as a ``Flow``; None if it is no IPv4 UDP entry."""
    orig, reply = entry.tuple_orig, entry.tuple_reply
    if orig.proto != socket.IPPROTO_UDP or orig.family != socket.AF_INET:
        return None
    try:
        return Flow(IPv4Address(orig.daddr), int(orig.dport),
                    IPv4Address(reply.saddr), int(reply.sport))
    except (TypeError, ValueError):
        return None
