"""``podium-agent``: run the node agent, on static pods and, with ``--scheduler``, on
the pods the scheduler binds to this node.

SIGTERM and SIGINT stop the loop and the gRPC server, not the pods: their
containers keep running under their shims, and the next agent re-adopts them.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import sys
from ipaddress import IPv4Network, ip_address
from pathlib import Path
from types import FrameType

from agent.daemon import (
    DEFAULT_IMAGE_STORE,
    DEFAULT_LISTEN,
    DEFAULT_MANIFESTS,
    DEFAULT_ROOT,
    DEFAULT_STANDALONE_CIDR,
    Agent,
    AgentConfig,
)
from agent.network.config import DEFAULT_CLUSTER_DOMAIN

DEFAULT_BRIDGE = "podium0"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="podium-agent", description="podium's node agent")
    p.add_argument("--scheduler", metavar="ADDR", default="",
                   help="the scheduler's address, host:port (default: none, static pods only)")
    p.add_argument("--node-name", default="",
                   help="default: the host name, plus -BRIDGE when --bridge is not podium0")
    p.add_argument("--node-ip", type=ip_address, default=None, metavar="IP",
                   help="the node's InternalIP (default: the default route's address)")
    p.add_argument("--manifests", type=Path, default=DEFAULT_MANIFESTS, metavar="DIR",
                   help=f"static pod manifests (default {DEFAULT_MANIFESTS})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                   help=f"gRPC address, host:port or unix:PATH (default {DEFAULT_LISTEN})")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                   help=f"state: runtime, netns, pods (default {DEFAULT_ROOT})")
    p.add_argument("--pod-cidr", type=IPv4Network, default=None, metavar="CIDR",
                   help="this node's pods (default: the scheduler's assignment, "
                        f"or {DEFAULT_STANDALONE_CIDR} without one)")
    p.add_argument("--bridge", default=DEFAULT_BRIDGE, metavar="NAME",
                   help="the node's pod bridge; it also names the nftables table, so "
                        "several agents on one machine differ by --bridge, --root, --listen "
                        "and --cgroup-parent alone")
    p.add_argument("--cgroup-parent", default="podium", metavar="NAME")
    p.add_argument("--image-store", type=Path, default=DEFAULT_IMAGE_STORE, metavar="DIR",
                   help=f"the node's image store (default {DEFAULT_IMAGE_STORE})")
    p.add_argument("--no-cluster-dns", dest="cluster_dns", action="store_false",
                   help="with --scheduler: no DNS server on the bridge address; "
                        "pods get the node's resolvers")
    p.add_argument("--dns-port", type=int, default=53, metavar="PORT",
                   help="the node's cluster DNS server port on the bridge address "
                        "(default 53; pods reach it as 10.96.0.10:53 either way)")
    p.add_argument("--cluster-domain", default=DEFAULT_CLUSTER_DOMAIN, metavar="DOMAIN")
    p.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def node_identity(node_name: str, bridge: str) -> tuple[str, str]:
    """The node's name and its nftables table: an agent on its own bridge is a
    node of its own, so two agents on one machine never share either."""
    if bridge == DEFAULT_BRIDGE:
        return node_name or socket.gethostname(), "podium"
    suffix = re.sub(r"[^A-Za-z0-9]", "-", bridge).strip("-").lower()
    return node_name or f"{socket.gethostname()}-{suffix}", "podium_" + suffix.replace("-", "_")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from agent.preflight import check_node

    # A node missing what pods need says so now, not at its first pod.
    problems = check_node()
    for problem in problems:
        print(f"podium-agent: {problem}", file=sys.stderr)
    if problems:
        return 1
    node_name, nft_table = node_identity(args.node_name, args.bridge)
    pod_cidr = args.pod_cidr
    if pod_cidr is None and not args.scheduler:
        pod_cidr = DEFAULT_STANDALONE_CIDR
    config = AgentConfig(manifests=args.manifests, listen=args.listen, root=args.root,
                         pod_cidr=pod_cidr, bridge=args.bridge,
                         cgroup_parent=args.cgroup_parent, node_name=node_name,
                         nft_table=nft_table,
                         image_store=args.image_store, scheduler=args.scheduler,
                         node_ip=str(args.node_ip) if args.node_ip else "",
                         cluster_dns=args.cluster_dns, dns_port=args.dns_port,
                         cluster_domain=args.cluster_domain)
    agent = Agent(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        agent.start()
    except Exception as e:  # noqa: BLE001 - one line, not a traceback, for the operator
        print(f"podium-agent: {e}", file=sys.stderr)
        return 1
    try:
        agent.run()
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
