"""``podium-scheduler``: the control plane's one process.

Agents join with ``podium-agent --scheduler ADDR --node-name NAME``; users
reach it with ``podium`` (``--server`` or ``PODIUM_SERVER``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from scheduler.server import DEFAULT_DATA, DEFAULT_LISTEN, Scheduler, SchedulerConfig


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="podium-scheduler", description="podium's control plane: API, store, "
        "placement and controllers",
        epilog="example: podium-scheduler --listen 0.0.0.0:7400 --data /var/lib/podium/scheduler")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                   help=f"gRPC address (default {DEFAULT_LISTEN})")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                   help=f"where the SQLite store lives (default {DEFAULT_DATA})")
    p.add_argument("--store", default="", metavar="URL",
                   help="sqlite:///PATH (default: cluster.db under --data)")
    p.add_argument("--node-grace", type=_seconds, default=5.0, metavar="SECONDS",
                   help="a node missing heartbeats this long is NotReady (default 5)")
    p.add_argument("--eviction-timeout", type=_seconds, default=5.0, metavar="SECONDS",
                   help="a NotReady node's pods are replaced after this (default 5)")
    p.add_argument("--heartbeat-interval", type=_seconds, default=1.0, metavar="SECONDS",
                   help="how often agents are told to heartbeat (default 1)")
    p.add_argument("--cluster-cidr", default="10.88.0.0/16", metavar="CIDR",
                   help="the pod network; each node gets a /24 of it (default 10.88.0.0/16)")
    p.add_argument("--service-cidr", default="10.96.0.0/16", metavar="CIDR",
                   help="the Services' cluster IPs; its 10th address is the cluster DNS "
                   "(default 10.96.0.0/16)")
    p.add_argument("--log-level", default="INFO",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = SchedulerConfig(listen=args.listen, data=args.data, store=args.store,
                             node_grace=args.node_grace,
                             eviction_timeout=args.eviction_timeout,
                             heartbeat_interval=args.heartbeat_interval,
                             cluster_cidr=args.cluster_cidr,
                             service_cidr=args.service_cidr)
    scheduler = Scheduler(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        scheduler.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        scheduler.start()
    except Exception as e:  # noqa: BLE001 - one line, not a traceback, for the operator
        print(f"podium-scheduler: {e}", file=sys.stderr)
        scheduler.close()
        return 1
    try:
        scheduler.wait()
    finally:
        scheduler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
