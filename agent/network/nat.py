"""nftables for the node: masquerade pods' outbound traffic, DNAT hostPorts to pods.

One table per node (``inet podium`` by default), in the node's network namespace:

    chain hostports      one DNAT rule per published port, its comment naming the mapping
    chain prerouting     nat hook: traffic to one of the node's own addresses → hostports
    chain output         the same for connections the node itself opens
    chain postrouting    masquerade what leaves the pod network (the cluster CIDR, or
                         the node's pod CIDR without one: pod-to-pod traffic across
                         nodes keeps its source address), and hostPort traffic a pod
                         sends back into the pod CIDR (so the reply returns the same way)

Changes go to ``nft -f -`` as one script (one transaction); reads use ``nft -j``.
"""

from __future__ import annotations

import json
import subprocess
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, NamedTuple

from agent.errors import NetworkError, PortConflictError
from agent.network.config import gateway_of
from agent.network.nft import run_nft

PROTOCOLS = ("tcp", "udp", "sctp")
_COMMENT_TAG = "hostport"


class PortMapping(NamedTuple):
    """A hostPort: ``protocol`` traffic to ``host_port`` on the node goes to the pod."""

    pod_ip: IPv4Address
    container_port: int
    host_port: int
    protocol: str  # tcp, udp or sctp

    def comment(self) -> str:
        target = f"{self.pod_ip}:{self.container_port}"
        return f"{_COMMENT_TAG} {self.protocol} {self.host_port} {target}"

    @classmethod
    def from_comment(cls, comment: str) -> PortMapping | None:
        fields = comment.split()
        if len(fields) != 4 or fields[0] != _COMMENT_TAG or ":" not in fields[3]:
            return None
        ip, _, port = fields[3].rpartition(":")
        try:
            return cls(IPv4Address(ip), int(port), int(fields[2]), fields[1])
        except ValueError:
            return None


def port_mapping(pod_ip: IPv4Address | str, container_port: int, host_port: int,
                 protocol: str = "TCP") -> PortMapping:
    """A checked mapping; the protocol is spelt as Kubernetes does (TCP) or as nft does."""
    proto = protocol.lower()
    if proto not in PROTOCOLS:
        raise NetworkError(f"hostPort {host_port}: unknown protocol {protocol!r}")
    for what, port in (("hostPort", host_port), ("containerPort", container_port)):
        if not 0 < port < 65536:
            raise NetworkError(f"{what} {port}: not a port number (1-65535)")
    return PortMapping(IPv4Address(pod_ip), container_port, host_port, proto)


class NatTable:
    """The node's nftables table (``inet <name>``) in the node's network namespace."""

    def __init__(self, name: str, pod_cidr: IPv4Network, netns: Path | None = None,
                 cluster_cidr: IPv4Network | None = None) -> None:
        self.name = name
        self.pod_cidr = pod_cidr
        self.netns = netns
        # Where pods' traffic keeps its source address: every node's pods.
        self.cluster_cidr = cluster_cidr
        # The pods with a hostPort rule, read from the kernel at the first need and
        # then kept by this table's own changes (only the agent writes its hostports
        # chain): most pods publish none, and tearing them down then asks nft nothing.
        # The lock makes each hostPort change one step: read, check, write, record.
        self._targets: set[IPv4Address] | None = None
        self._lock = threading.Lock()

    # The table ----------------------------------------------------------------

    def ensure(self) -> None:
        """Create the table and its chains, and (re)write the masquerade rules.

        Idempotent: published hostPorts survive; only the fixed chains are rewritten.
        """
        t, cidr = f"inet {self.name}", self.pod_cidr
        inside = self.cluster_cidr or cidr
        self._run_script(
            f"add table {t}\n"
            f"add chain {t} hostports\n"
            f"add chain {t} prerouting {{ type nat hook prerouting priority -100; }}\n"
            f"add chain {t} output {{ type nat hook output priority -100; }}\n"
            f"add chain {t} postrouting {{ type nat hook postrouting priority 100; }}\n"
            f"flush chain {t} prerouting\n"
            f"flush chain {t} output\n"
            f"flush chain {t} postrouting\n"
            f"add rule {t} prerouting fib daddr type local jump hostports\n"
            f"add rule {t} output fib daddr type local jump hostports\n"
            f"add rule {t} postrouting ip saddr {cidr} ip daddr != {inside} masquerade\n"
            # A pod reaching a pod of this bridge through a DNAT: masqueraded, else the
            # reply would go straight back past the DNAT. Not the node itself (the
            # bridge's address): replies to it always come back through it, and a
            # needless SNAT of every node-to-Service connection costs a port search.
            f"add rule {t} postrouting ct status dnat ip saddr {cidr} "
            f"ip saddr != {gateway_of(cidr)} ip daddr {cidr} masquerade\n"
        )

    def exists(self) -> bool:
        return self._run(["list", "table", "inet", self.name], check=False).returncode == 0

    def delete(self) -> bool:
        """Remove the table with every rule in it; False if there was none (idempotent)."""
        with self._lock:
            self._targets = None  # unknown until this is done
            if self.exists():
                self._run_script(f"delete table inet {self.name}\n")
                self._targets = set()
                return True
            self._targets = set()
            return False

    # hostPorts ----------------------------------------------------------------

    def published(self) -> list[PortMapping]:
        with self._lock:
            return [mapping for mapping, _ in self._hostport_rules()]

    def publish(self, pod_ip: IPv4Address | str, container_port: int, host_port: int,
                protocol: str = "TCP") -> PortMapping:
        """DNAT ``protocol`` traffic to ``host_port`` on the node's addresses to the pod.

        Publishing the same mapping twice is a no-op; the host port taken by another
        mapping is a PortConflictError.
        """
        mapping = port_mapping(pod_ip, container_port, host_port, protocol)
        with self._lock:
            return self._publish(mapping)

    def _publish(self, mapping: PortMapping) -> PortMapping:
        host_port = mapping.host_port
        for existing, _ in self._hostport_rules():
            if (existing.protocol, existing.host_port) == (mapping.protocol, host_port):
                if existing == mapping:
                    return mapping
                raise PortConflictError(
                    f"hostPort {mapping.protocol}/{host_port}: already published to "
                    f"{existing.pod_ip}:{existing.container_port} (table inet {self.name})"
                )
        self._run_script(
            f"add rule inet {self.name} hostports meta l4proto {mapping.protocol} "
            f"th dport {host_port} dnat ip to {mapping.pod_ip}:{mapping.container_port} "
            f'comment "{mapping.comment()}"\n'
        )
        if self._targets is not None:
            self._targets.add(mapping.pod_ip)
        return mapping

    def unpublish(self, pod_ip: IPv4Address | str, container_port: int, host_port: int,
                  protocol: str = "TCP") -> bool:
        """Remove one mapping; False if it was not published (idempotent)."""
        wanted = port_mapping(pod_ip, container_port, host_port, protocol)
        with self._lock:
            return self._delete_rules(lambda m: m == wanted) > 0

    def unpublish_pod(self, pod_ip: IPv4Address | str) -> int:
        """Remove every mapping to ``pod_ip``; returns how many there were."""
        ip = IPv4Address(pod_ip)
        with self._lock:
            if self._targets is not None and ip not in self._targets:
                return 0
            if not self.exists():
                self._targets = set()
                return 0
            return self._delete_rules(lambda m: m.pod_ip == ip)

    # Inside -------------------------------------------------------------------

    def _delete_rules(self, match: Any) -> int:
        """Under the lock: remove the rules whose mapping ``match``es."""
        rules = self._hostport_rules()
        handles = [handle for mapping, handle in rules if match(mapping)]
        if handles:
            self._run_script("".join(
                f"delete rule inet {self.name} hostports handle {h}\n" for h in handles
            ))
            self._targets = {mapping.pod_ip for mapping, _ in rules if not match(mapping)}
        return len(handles)

    def _hostport_rules(self) -> list[tuple[PortMapping, int]]:
        """Under the lock: the hostports chain as the kernel has it now."""
        out = self._run(["-j", "list", "chain", "inet", self.name, "hostports"]).stdout
        try:
            items = json.loads(out)["nftables"]
        except (ValueError, KeyError) as e:
            raise NetworkError(f"nftables table inet {self.name}: unreadable listing") from e
        found = []
        for item in items:
            rule = item.get("rule")
            if rule is None:
                continue
            mapping = PortMapping.from_comment(rule.get("comment", ""))
            if mapping is not None:
                found.append((mapping, int(rule["handle"])))
        self._targets = {mapping.pod_ip for mapping, _ in found}
        return found

    def _run_script(self, script: str) -> None:
        self._run(["-f", "-"], stdin=script)

    def _run(self, args: list[str], stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_nft(args, what=f"nftables table inet {self.name}", stdin=stdin,
                       netns=self.netns, check=check)
