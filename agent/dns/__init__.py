"""The node's cluster DNS: Service and pod names answered, other names forwarded.

    DnsServer(address, port, records, upstreams, domain="cluster.local")
                          UDP and TCP on one address; .start(), .close(), .port
    ClusterResolver       the answers for names under the cluster domain, from a
                          snapshot callable: () → (services, endpoints), each a mapping
                          (namespace, name) → service_pb2.Service / Endpoints
    TTL                   every record's TTL, and the SOA's negative-caching minimum

Errors: ``DnsError`` (an ``agent.errors.NetworkError``) when the server cannot bind.
"""

from __future__ import annotations

from agent.dns.records import (
    DEFAULT_DOMAIN,
    HEADLESS,
    TTL,
    ClusterResolver,
    Snapshot,
    SnapshotSource,
    service_records,
)
from agent.dns.server import DEFAULT_PORT, FORWARD_TIMEOUT, DnsError, DnsServer, parse_upstream

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_PORT",
    "FORWARD_TIMEOUT",
    "HEADLESS",
    "TTL",
    "ClusterResolver",
    "DnsError",
    "DnsServer",
    "Snapshot",
    "SnapshotSource",
    "parse_upstream",
    "service_records",
]
