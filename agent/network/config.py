"""The node network's settings and the names derived from them.

Every name and path is a setting, so several agents (each in its own network
namespace, with its own state root and bridge) can share one machine in tests.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import NamedTuple

from agent.errors import NetworkError

DEFAULT_POD_NETWORK = IPv4Network("10.88.0.0/16")  # the cluster's; each node gets a /24
DEFAULT_SERVICE_NETWORK = IPv4Network("10.96.0.0/16")  # ClusterIPs
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_BRIDGE = "podium0"
DEFAULT_NFT_TABLE = "podium"
DEFAULT_VETH_PREFIX = "pd"
DEFAULT_STATE_DIR = Path("/run/podium/agent/network")
DEFAULT_NETNS_DIR = Path("/run/podium/netns")
DEFAULT_PODS_DIR = Path("/run/podium/agent/pods")

IFNAMSIZ = 15  # the kernel's limit on an interface name, without the NUL
_VETH_HASH_CHARS = 10
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Pod UIDs are UUIDs in practice; anything that is a plain file name is accepted.
_POD_UID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


class NetworkConfig(NamedTuple):
    """One node's network: its pod CIDR, the names it creates and where it keeps state."""

    pod_cidr: IPv4Network
    bridge: str = DEFAULT_BRIDGE
    nft_table: str = DEFAULT_NFT_TABLE
    veth_prefix: str = DEFAULT_VETH_PREFIX
    state_dir: Path = DEFAULT_STATE_DIR  # IPAM allocations
    netns_dir: Path = DEFAULT_NETNS_DIR  # one bind-mounted network namespace per pod
    pods_dir: Path = DEFAULT_PODS_DIR  # <uid>/hosts, hostname, resolv.conf
    # The network namespace the node's bridge and nftables live in; None is the
    # caller's own (production). Tests give each "node" a namespace of its own.
    node_netns: Path | None = None
    resolv_conf: Path = Path("/etc/resolv.conf")  # where the pods' nameservers come from
    # The whole pod network (every node's pod CIDR); traffic to it keeps its source
    # address. None: only this node's pod CIDR (a standalone agent).
    cluster_cidr: IPv4Network | None = None
    service_cidr: IPv4Network = DEFAULT_SERVICE_NETWORK
    # The pods' nameserver with dnsPolicy ClusterFirst; None: no cluster DNS (a
    # standalone agent), pods get the node's resolvers.
    cluster_dns: IPv4Address | None = None
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


def gateway_of(pod_cidr: IPv4Network) -> IPv4Address:
    """The bridge's address: the pod CIDR's first host, the pods' default gateway and
    the node itself on the pod network."""
    return pod_cidr.network_address + 1


def check_config(config: NetworkConfig) -> None:
    """Reject settings the kernel or nft would refuse later, naming the setting."""
    if config.pod_cidr.prefixlen > 30:
        raise NetworkError(f"pod CIDR {config.pod_cidr}: too small, needs at least a /30")
    check_ifname(config.bridge, "bridge")
    if len(config.veth_prefix) + _VETH_HASH_CHARS > IFNAMSIZ or not _IFNAME.match(
        config.veth_prefix
    ):
        raise NetworkError(
            f"veth prefix {config.veth_prefix!r}: needs 1 to "
            f"{IFNAMSIZ - _VETH_HASH_CHARS} letters, digits, '_', '.' or '-'"
        )
    if not _TABLE.match(config.nft_table):
        raise NetworkError(f"nftables table {config.nft_table!r}: not a plain identifier")


def check_ifname(name: str, what: str) -> None:
    if not 0 < len(name) <= IFNAMSIZ or not _IFNAME.match(name):
        raise NetworkError(
            f"{what} name {name!r}: needs 1 to {IFNAMSIZ} letters, digits, '_', '.' or '-'"
        )


def check_pod_uid(uid: str) -> None:
    """A pod UID names files and directories: it must be a plain file name."""
    if not _POD_UID.match(uid) or uid in (".", ".."):
        raise NetworkError(f"pod UID {uid!r}: not a plain name")


def host_veth_name(prefix: str, pod_uid: str) -> str:
    """The host end of a pod's veth pair: the prefix and 10 hex digits of the UID's hash.

    Deterministic, so a restarted agent (or a teardown after a crash) finds the
    device from the pod alone; 40 bits of hash keep the names of one node's pods apart.
    """
    digest = hashlib.sha256(pod_uid.encode()).hexdigest()
    return prefix + digest[:_VETH_HASH_CHARS]
