"""What the cluster verbs share (``--server``, ``-n``, ages as kubectl prints
them), and ``podium cluster-info`` and ``podium version``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.api import Client


def server_options(all_namespaces: bool = False) -> argparse.ArgumentParser:
    """``--server`` and ``-n`` (and ``-A`` where a command lists across namespaces)."""
    p = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: written before the command (``podium --server X get pods``, as
    # kubectl takes it), the value must survive the command's own defaults.
    p.add_argument("--server", "-s", metavar="ADDR", default=argparse.SUPPRESS,
                   help="the scheduler (default: $PODIUM_SERVER, else 127.0.0.1:7400; "
                        "unix:PATH for a socket)")
    p.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                   help="the namespace (default: default)")
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true",
                       help="every namespace")
    return p


def connect(args: argparse.Namespace) -> Client:
    from client.api import Client

    return Client(getattr(args, "server", None))


def namespace(args: argparse.Namespace) -> str:
    return getattr(args, "namespace", None) or "default"


def add(sub: Any, common: argparse.ArgumentParser, name: str, help: str, examples: str,
        *parents: argparse.ArgumentParser, aliases: tuple[str, ...] = ()) -> Any:
    """One top-level verb, its examples under ``--help``."""
    return sub.add_parser(name, help=help, description=help, aliases=list(aliases),
                          epilog=f"examples:\n{examples}", parents=[common, *parents],
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def short_age(ts: Any, now: datetime | None = None) -> str:
    """A protobuf Timestamp as kubectl's AGE column: ``45s``, ``3m``, ``5h``, ``2d``;
    ``<unknown>`` when unset."""
    if not ts.seconds and not ts.nanos:
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - ts.ToDatetime(tzinfo=UTC)).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d" if days < 365 * 2 else f"{days // 365}y"


EXAMPLES_INFO = "  podium cluster-info\n  podium cluster-info --server 10.0.0.5:7400\n"
EXAMPLES_VERSION = "  podium version\n  podium version --client\n"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add(sub, common, "cluster-info", "where the scheduler is and how many nodes are ready",
            EXAMPLES_INFO, server_options())
    p.set_defaults(func=cmd_cluster_info)
    p = add(sub, common, "version", "the client's version, and whether the scheduler answers",
            EXAMPLES_VERSION, server_options())
    p.add_argument("--client", action="store_true", help="the client's version only")
    p.set_defaults(func=cmd_version)


def cmd_cluster_info(args: argparse.Namespace) -> int:
    with connect(args) as c:
        nodes = c.list("nodes")
        ready = sum(1 for n in nodes
                    if any(x.type == "Ready" and x.status == "True" for x in n.status.conditions))
        sys.stdout.write(f"Podium scheduler is running at {c.server}\n"
                         f"Nodes: {ready} ready of {len(nodes)}\n")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    """The client's version; the scheduler reports none of its own (no RPC says it),
    so the server line says whether it answers, and which versions its agents run."""
    from client.api import Unreachable
    from client.cli import VERSION

    sys.stdout.write(f"Client Version: {VERSION}\n")
    if args.client:
        return 0
    with connect(args) as c:
        try:
            nodes = c.list("nodes")
        except Unreachable as e:
            sys.stdout.write("Server Version: unknown (not reachable)\n")
            sys.stderr.write(f"podium: {e}\n")
            return 1
    sys.stdout.write(f"Server Version: unknown (the scheduler at {c.server} answers but "
                     "does not report its version)\n")
    agents = sorted({n.status.node_info.podium_version for n in nodes
                     if n.status.node_info.podium_version})
    if agents:
        sys.stdout.write(f"Agent Versions: {', '.join(agents)}\n")
    return 0
