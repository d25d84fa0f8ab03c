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


def reap_all() -> None:
    """Wait for every child. After a failed exec, its stage 2 (killed, or exiting after
    its report) is the caller's: left unreaped, it would be a zombie of the
    container's PID namespace reaped by whoever inherits it, and the container's init,
    when it exits, waits for every process of its namespace to be reaped."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def exit_code(pid: int) -> int:
    """Reap ``pid`` (blocking) and return its exit code, 128+n for signal n; -1 when
    it is not this process's child to reap."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return -1
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


def wait_with_timeout(pid: int, timeout: float) -> int:
    """``exit_code`` of a child, waiting at most ``timeout`` seconds; after that the
    child is killed, reaped, and TimeoutError raised. A pidfd makes the wait a select
    with a timeout instead of a polling loop."""
    import select
    import signal

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1  # it ended already and waits to be reaped
    try:
        if pidfd >= 0 and not select.select([pidfd], [], [], timeout)[0]:
            signal_pid(pid, signal.SIGKILL)
            exit_code(pid)
            raise TimeoutError(f"process {pid} still running after {timeout:g}s: killed")
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return exit_code(pid)
