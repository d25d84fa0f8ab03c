"""Network namespaces held open by a bind mount, and running code inside one.

Both are done by a short-lived thread, never a fork: ``unshare(CLONE_NEWNET)``
and ``setns`` change only the calling thread, so the agent (which runs gRPC
threads) can create and enter namespaces safely. A netlink socket, or a process
started from such a thread, belongs to the thread's namespace for its whole life.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.errors import NetworkError
from runtime.syscalls import CLONE_NEWNET, MNT_DETACH, MS_BIND, LinuxSyscalls

T = TypeVar("T")

_syscalls = LinuxSyscalls()


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread of its own and hand back its result or exception."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    thread = threading.Thread(target=target, name="podium-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def run_in_netns(path: Path | None, fn: Callable[[], T]) -> T:
    """Call ``fn`` inside the network namespace bound at ``path`` (None: the caller's own)."""
    if path is None:
        return fn()

    def entered() -> T:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise NetworkError(f"network namespace {path}: {e.strerror}") from e
        try:
            _syscalls.setns(fd, CLONE_NEWNET)
        except OSError as e:
            raise NetworkError(f"network namespace {path}: setns: {e.strerror}") from e
        finally:
            os.close(fd)
        return fn()

    return _in_thread(entered)


def create_netns(path: Path) -> None:
    """Make a new network namespace and bind it at ``path`` (which must not exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def make() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
        except OSError as e:
            raise NetworkError(f"network namespace {path}: {e.strerror}") from e
        os.close(fd)
        try:
            _syscalls.unshare(CLONE_NEWNET)
            own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
            _syscalls.mount(own, str(path), None, MS_BIND, None)
        except OSError as e:
            path.unlink(missing_ok=True)
            raise NetworkError(f"network namespace {path}: {e.strerror}") from e

    _in_thread(make)


def remove_netns(path: Path) -> None:
    """Unbind and remove ``path``; the namespace goes when nothing else holds it.

    Idempotent: a missing file, or a file left unmounted by a crash, is fine.
    """
    try:
        _syscalls.umount2(str(path), MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise NetworkError(f"network namespace {path}: umount: {e.strerror}") from e
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise NetworkError(f"network namespace {path}: {e.strerror}") from e


def is_netns(path: Path) -> bool:
    """Whether ``path`` holds a network namespace (a bound nsfs file, not a bare file)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False
