"""Pod networking on one node: what CNI's bridge, host-local and portmap plugins do.

    PodNetwork(config)        the node's handle: setup_node / teardown_node,
                              setup(uid, name) → Sandbox, lookup, teardown, publish
    NetworkConfig             pod CIDR, bridge, nftables table, directories, node netns
    HostLocalIPAM             one address per pod UID, persisted under a file lock
    NatTable                  masquerade and hostPort DNAT (nftables, ``inet podium``)
    enable_ip_forwarding      the node-wide sysctl, for the agent to call on start
    create_netns, remove_netns, run_in_netns
                              bind-mounted network namespaces, entered by a thread

Errors are ``agent.errors.NetworkError`` and its subclasses.
"""

from __future__ import annotations

from agent.network.bridge import enable_ip_forwarding, ip_forwarding
from agent.network.config import (
    DEFAULT_BRIDGE,
    DEFAULT_NETNS_DIR,
    DEFAULT_NFT_TABLE,
    DEFAULT_POD_NETWORK,
    DEFAULT_PODS_DIR,
    DEFAULT_STATE_DIR,
    NetworkConfig,
    check_config,
    host_veth_name,
)
from agent.network.ipam import HostLocalIPAM
from agent.network.nat import NatTable, PortMapping, port_mapping
from agent.network.netns import create_netns, is_netns, remove_netns, run_in_netns
from agent.network.podfiles import DnsConfig, node_dns, pod_hostname
from agent.network.sandbox import PodNetwork, Sandbox

__all__ = [
    "DEFAULT_BRIDGE",
    "DEFAULT_NETNS_DIR",
    "DEFAULT_NFT_TABLE",
    "DEFAULT_POD_NETWORK",
    "DEFAULT_PODS_DIR",
    "DEFAULT_STATE_DIR",
    "DnsConfig",
    "HostLocalIPAM",
    "NatTable",
    "NetworkConfig",
    "PodNetwork",
    "PortMapping",
    "Sandbox",
    "check_config",
    "create_netns",
    "enable_ip_forwarding",
    "host_veth_name",
    "ip_forwarding",
    "is_netns",
    "node_dns",
    "pod_hostname",
    "port_mapping",
    "remove_netns",
    "run_in_netns",
]
