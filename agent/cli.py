"""``podium-agent``: run the node agent (standalone on static pods, for now).

SIGTERM and SIGINT stop the loop and the gRPC server, not the pods: their
containers keep running under their shims, and the next agent re-adopts them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from ipaddress import IPv4Network
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="podium-agent", description="podium's node agent")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="the scheduler's address (not available yet)")
    p.add_argument("--node-name", default=socket.gethostname(), help="default: the host name")
    p.add_argument("--manifests", type=Path, default=DEFAULT_MANIFESTS, metavar="DIR",
                   help=f"static pod manifests (default {DEFAULT_MANIFESTS})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                   help=f"gRPC address, host:port or unix:PATH (default {DEFAULT_LISTEN})")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                   help=f"state: runtime, netns, pods (default {DEFAULT_ROOT})")
    p.add_argument("--pod-cidr", type=IPv4Network, default=DEFAULT_STANDALONE_CIDR,
                   metavar="CIDR", help=f"this node's pods (default {DEFAULT_STANDALONE_CIDR})")
    p.add_argument("--bridge", default="podium0", metavar="NAME")
    p.add_argument("--cgroup-parent", default="podium", metavar="NAME")
    p.add_argument("--image-store", type=Path, default=DEFAULT_IMAGE_STORE, metavar="DIR",
                   help=f"the node's image store (default {DEFAULT_IMAGE_STORE})")
    p.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.scheduler:
        print("podium-agent: --scheduler: the scheduler is not available yet; "
              "run without it to serve static pods from --manifests", file=sys.stderr)
        return 2
    config = AgentConfig(manifests=args.manifests, listen=args.listen, root=args.root,
                         pod_cidr=args.pod_cidr, bridge=args.bridge,
                         cgroup_parent=args.cgroup_parent, node_name=args.node_name,
                         image_store=args.image_store)
    agent = Agent(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stop_event.set()

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
