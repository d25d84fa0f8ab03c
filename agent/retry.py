"""What every long-lived call to the scheduler shares: back-off between tries, one
log line when a call starts failing and one when it works again, and cancelling a
stream (the scheduler link and the cluster catalog both use them)."""

from __future__ import annotations

import logging
import threading

import grpc


class Backoff:
    """0.2 s, doubling to 5 s; ``reset()`` after a success."""

    def __init__(self, first: float = 0.2, most: float = 5.0) -> None:
        self.first, self.most = first, most
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.most, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first


class Outages:
    """Logs a call that keeps failing once, not at every retry, and once when it works
    again; ``what`` names the call (a thread may own several)."""

    def __init__(self, log: logging.Logger, address: str) -> None:
        self.log, self.address = log, address
        self._lock = threading.Lock()
        self._down: set[str] = set()

    def down(self, what: str, error: grpc.RpcError) -> None:
        with self._lock:
            if what in self._down:
                return
            self._down.add(what)
        self.log.warning("scheduler %s: %s: %s (retrying)", self.address, what,
                         error.details() or error.code().name)

    def up(self, what: str) -> None:
        with self._lock:
            if what not in self._down:
                return
            self._down.discard(what)
        self.log.info("scheduler %s: %s works again", self.address, what)


def cancel(call: grpc.RpcContext) -> None:
    call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leave cancel() untyped
