"""Waiting on container processes from the host, without racing their start-up."""

from __future__ import annotations

import time

import psutil


def wait_until_looping(pid: int, timeout: float = 10.0) -> None:
    """Wait until the shell ``pid`` runs its loop (it has forked a child, e.g. ``sleep``).

    A shell that is PID 1 of its namespace ignores signals it has no trap for yet:
    a test that signals it must first know the trap line has run.
    """
    deadline = time.monotonic() + timeout
    while not psutil.Process(pid).children():
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not reach its loop in {timeout} s")
        time.sleep(0.01)
