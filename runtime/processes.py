"""Small process helpers shared by the lifecycle verbs: signal, reap, wait."""

from __future__ import annotations

import os
import time

from runtime.state import pid_start_time


def signal_pid(pid: int, sig: int) -> None:
    """Send ``sig``; a process that is already gone is fine."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def reap(pid: int, block: bool = True) -> None:
    """Collect ``pid``'s exit if it is our child (the caller is its subreaper)."""
    try:
        os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        pass


def wait_gone(pid: int, start_time: int, timeout: float) -> bool:
    """Wait until the process is gone (or a zombie), reaping it if it is ours.
    True if it went within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid_start_time(pid) == start_time:
        if time.monotonic() > deadline:
            return False
        reap(pid, block=False)
        time.sleep(0.002)
    reap(pid, block=False)
    return True


def reap_children() -> None:
    """Collect every child that has exited, without waiting: what a subreaper owes the
    orphans re-parented to it."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
