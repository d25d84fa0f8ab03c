"""Nodes' leases: when each agent last said it was alive.

Kept in memory only: after a restart every node starts with a full grace
period (counted from `started`), which is what a node that is in fact alive
needs to heartbeat again. Times are from the injected monotonic clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Leases:
    """Thread-safe: heartbeats renew from gRPC threads, the node lifecycle
    controller reads from its own."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._renewed: dict[str, float] = {}

    def renew(self, node_name: str) -> None:
        now = self.clock()
        with self._lock:
            self._renewed[node_name] = now

    def last_renewal(self, node_name: str) -> float | None:
        with self._lock:
            return self._renewed.get(node_name)

    def silence(self, node_name: str) -> float:
        """Seconds since the node was last heard from, or since `started`."""
        last = self.last_renewal(node_name)
        return self.clock() - (self.started if last is None else last)

    def forget(self, node_name: str) -> None:
        with self._lock:
            self._renewed.pop(node_name, None)
