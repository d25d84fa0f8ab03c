"""``podium up`` and ``podium down``: a single-node cluster on this machine.

The work is ``client.cluster_up``; this module reads arguments and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from client.cluster_up import (
    DEFAULT_AGENT_LISTEN,
    DEFAULT_BRIDGE,
    DEFAULT_CGROUP_PARENT,
    DEFAULT_DATA,
    DEFAULT_IMAGE_STORE,
    DEFAULT_LISTEN,
    DEFAULT_LOG_DIR,
    DEFAULT_MANIFESTS,
    DEFAULT_RUN_DIR,
)

_UP_HELP = "start a single-node cluster here: the scheduler and an agent, in the background"
_DOWN_HELP = "stop the cluster `podium up` started and remove its pods"
_UP_EXAMPLES = """examples:
  sudo podium up
  sudo podium up --listen 0.0.0.0:7400          (other machines may join and reach it)
  sudo podium up --data /srv/podium --log-dir /srv/podium/logs

The scheduler keeps its objects in SQLite under --data; `podium down` keeps them,
so the next `podium up` runs the same pods again. Running `up` twice starts nothing.
"""
_DOWN_EXAMPLES = """examples:
  sudo podium down
  sudo podium down --run-dir /tmp/podium-run      (a cluster started with that --run-dir)

Stops the agent, removes every pod's containers, namespaces and cgroups, the node's
bridge and nftables table, then stops the scheduler. Nothing running: says so.
"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``up`` and ``down`` to the top-level subparsers ``sub``."""
    up = sub.add_parser("up", help=_UP_HELP, description=_UP_HELP, parents=[common],
                        epilog=_UP_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.set_defaults(func=cmd_up)
    up.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                    help=f"the scheduler's database (default {DEFAULT_DATA})")
    up.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                    help=f"the scheduler's address, host:port or unix:PATH "
                         f"(default {DEFAULT_LISTEN})")
    up.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR, metavar="DIR",
                    help=f"scheduler.log and agent.log (default {DEFAULT_LOG_DIR})")
    _run_dir_option(up)
    up.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="how long to wait for the node to be Ready (default 30)")
    agent = up.add_argument_group("the agent's settings")
    agent.add_argument("--agent-listen", default=DEFAULT_AGENT_LISTEN, metavar="ADDR",
                       help=f"its gRPC address (default {DEFAULT_AGENT_LISTEN})")
    agent.add_argument("--bridge", default=DEFAULT_BRIDGE, metavar="NAME",
                       help=f"the pod bridge; it names the node too (default {DEFAULT_BRIDGE})")
    agent.add_argument("--cgroup-parent", default=DEFAULT_CGROUP_PARENT, metavar="NAME",
                       help=f"(default {DEFAULT_CGROUP_PARENT})")
    agent.add_argument("--image-store", type=Path, default=DEFAULT_IMAGE_STORE, metavar="DIR",
                       help=f"(default {DEFAULT_IMAGE_STORE})")
    agent.add_argument("--manifests", type=Path, default=DEFAULT_MANIFESTS, metavar="DIR",
                       help=f"static pod manifests (default {DEFAULT_MANIFESTS})")
    agent.add_argument("--node-ip", default="", metavar="IP",
                       help="the node's address (default: the default route's)")
    agent.add_argument("--netns", type=Path, default=None, metavar="PATH",
                       help="run the agent in this network namespace (nsenter --net): "
                            "for tests and nested set-ups")

    down = sub.add_parser("down", help=_DOWN_HELP, description=_DOWN_HELP, parents=[common],
                          epilog=_DOWN_EXAMPLES,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    down.set_defaults(func=cmd_down)
    _run_dir_option(down)


def _run_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, metavar="DIR",
                   help=f"PID files (under up/) and the agent's state "
                        f"(default {DEFAULT_RUN_DIR})")


def _need_root(command: str) -> bool:
    if os.geteuid() == 0:
        return True
    sys.stderr.write(f"podium {command}: needs root (the agent makes namespaces, cgroups "
                     f"and a bridge): try `sudo podium {command}`\n")
    return False


def _fail(command: str, e: Exception) -> int:
    from client.cluster_up import UpError

    sys.stderr.write(f"podium {command}: {e}\n")
    if isinstance(e, UpError) and e.details:
        sys.stderr.write("".join(f"  | {line}\n" for line in e.details.splitlines()))
    return 1


def cmd_up(args: argparse.Namespace) -> int:
    from client.cli.style import StatusLine
    from client.cluster_up import ClusterConfig, UpError, up

    if not _need_root("up"):
        return 1
    config = ClusterConfig(
        data=args.data.absolute(), listen=args.listen, log_dir=args.log_dir.absolute(),
        run_dir=args.run_dir.absolute(), agent_listen=args.agent_listen, bridge=args.bridge,
        cgroup_parent=args.cgroup_parent, image_store=args.image_store.absolute(),
        manifests=args.manifests.absolute(), node_ip=args.node_ip,
        netns=args.netns.absolute() if args.netns else None, timeout=args.timeout)
    began = time.monotonic()
    progress = StatusLine()
    progress.show(f"starting the scheduler and an agent; waiting for node {config.node_name} "
                  f"to be Ready (up to {config.timeout:g} s)...")

    def say(line: str) -> None:
        progress.clear()
        print(line)

    try:
        if not up(config, say=say):
            return 0
    except UpError as e:
        progress.clear()
        return _fail("up", e)
    finally:
        progress.clear()  # also on Ctrl-C
    server = "" if config.listen == DEFAULT_LISTEN else f"PODIUM_SERVER={config.listen} "
    run_dir = "" if config.run_dir == DEFAULT_RUN_DIR else f" --run-dir {config.run_dir}"
    print(f"podium is up: node {config.node_name} is Ready "
          f"({time.monotonic() - began:.1f} s)\n"
          f"  scheduler  {config.listen}  log {config.log_dir / 'scheduler.log'}  "
          f"data {config.data}\n"
          f"  agent      {config.agent_listen}  log {config.log_dir / 'agent.log'}  "
          f"state {config.run_dir}\n"
          f"try:\n"
          f"  {server}podium get nodes\n"
          f"  {server}podium apply -f app.yaml\n"
          f"stop it, and remove its pods, with:\n"
          f"  podium down{run_dir}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from client.cluster_up import UpError, down

    if not _need_root("down"):
        return 1
    try:
        if not down(args.run_dir.absolute()):
            print("podium is not running (nothing to stop)")
            return 0
    except UpError as e:
        return _fail("down", e)
    print("podium is down")
    return 0
