"""Network namespaces held open by a bind mount, and running code inside one.

Both are done by the calling thread, never a fork: ``unshare`` and ``setns`` of a
network, IPC or UTS namespace change only the calling thread, so the agent (which
runs gRPC threads) can make and enter namespaces safely. A netlink socket, or a
process started from such a thread, belongs to the thread's namespace for its
whole life. Once done, the thread ``setns``es back to the namespaces it was in.

(Handing the work to another thread, new or pooled, cost more: under a burst of
pod starts the caller often lost the CPU right after waking the helper, still
holding the GIL, and the agent stalled; py-spy saw about 1.2 ms of it a pod.)
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import TypeVar, overload

from agent.errors import NetworkError
from runtime.syscalls import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWUTS,
    MNT_DETACH,
    MS_BIND,
    LinuxSyscalls,
)

T = TypeVar("T")

_syscalls = LinuxSyscalls()

# The namespaces a pod holds for its life, by the name /proc/<tid>/ns/ uses.
NAMESPACE_FLAGS = {"net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}
_WORDS = {"net": "network", "ipc": "ipc", "uts": "uts"}


def _and_back(fn: Callable[[], T]) -> T:
    """``fn()``, which may make or enter network, IPC and UTS namespaces; then the
    calling thread goes back to the ones it was in (a nested call included)."""
    saved = [(os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flag)
             for kind, flag in NAMESPACE_FLAGS.items()]
    try:
        return fn()
    finally:
        try:
            for fd, flag in saved:
                _syscalls.setns(fd, flag)
        except OSError as e:
            # This thread would go on in a pod's namespace, its sockets and commands
            # with it: stop the agent rather (its containers run on; a new agent
            # adopts them).
            sys.stderr.write(f"podium-agent: cannot return a thread to its namespaces "
                             f"({e.strerror}): stopping\n")
            os._exit(70)
        finally:
            for fd, _ in saved:
                os.close(fd)


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

    return _and_back(entered)


def create_namespace(path: Path, kind: str = "net", hostname: str | None = None) -> None:
    """Make a new ``kind`` namespace (net, ipc or uts) and bind it at ``path``
    (which must not exist); a new UTS namespace gets ``hostname``."""
    create_namespaces({kind: path}, hostname)


def create_namespaces(paths: Mapping[str, Path], hostname: str | None = None,
                      inside: Callable[[], T] | None = None) -> T | None:
    """Make a new namespace of each kind in ``paths`` (net, ipc, uts) and bind it at
    its path (which must not exist); a new UTS namespace gets ``hostname``. Then
    ``inside()``, if given, runs in them, and this returns what it returned: a
    socket it opened stays in the new namespace. The calling thread does it all,
    then goes back to its own namespaces.

    One unshare for all of them (a pod's IPC and UTS namespaces are made at every
    pod start, so each system call counts). All or none: on a failure,
    ``inside``'s too, what this call made is removed.
    """
    flags = 0
    for kind, path in paths.items():
        flags |= NAMESPACE_FLAGS[kind]
        path.parent.mkdir(parents=True, exist_ok=True)

    def where(kind: str) -> str:
        return f"{_WORDS[kind]} namespace {paths[kind]}"

    def make() -> T | None:
        made: list[Path] = []
        try:
            for kind, path in paths.items():
                try:
                    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                     0))
                except OSError as e:
                    raise NetworkError(f"{where(kind)}: {e.strerror}") from e
                made.append(path)
            first = next(iter(paths))
            try:
                _syscalls.unshare(flags)
            except OSError as e:
                raise NetworkError(f"{where(first)}: {e.strerror}") from e
            if hostname is not None and "uts" in paths:
                try:
                    _syscalls.sethostname(hostname)
                except OSError as e:
                    raise NetworkError(f"{where('uts')}: {e.strerror}") from e
            tid = threading.get_native_id()
            for kind, path in paths.items():
                try:
                    _syscalls.mount(f"/proc/self/task/{tid}/ns/{kind}", str(path), None,
                                    MS_BIND, None)
                except OSError as e:
                    raise NetworkError(f"{where(kind)}: {e.strerror}") from e
            return None if inside is None else inside()
        except BaseException:
            for path in made:
                with suppress(NetworkError):  # the first failure is the one to tell
                    remove_namespace(path)  # bound or still a bare file: both go
            raise

    return _and_back(make)


@overload
def create_netns(path: Path) -> None: ...
@overload
def create_netns(path: Path, inside: Callable[[], T]) -> T: ...
def create_netns(path: Path, inside: Callable[[], T] | None = None) -> T | None:
    """Make a new network namespace and bind it at ``path`` (which must not exist);
    with ``inside``, what it returns when called in the new namespace (as for
    ``create_namespaces``)."""
    return create_namespaces({"net": path}, inside=inside)


def remove_namespace(path: Path) -> None:
    """Unbind and remove ``path``; the namespace goes when nothing else holds it.

    Idempotent: a missing file, or a file left unmounted by a crash, is fine.
    """
    try:
        _syscalls.umount2(str(path), MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise NetworkError(f"namespace {path}: umount: {e.strerror}") from e
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise NetworkError(f"namespace {path}: {e.strerror}") from e


remove_netns = remove_namespace


def is_netns(path: Path) -> bool:
    """Whether ``path`` holds a network namespace (a bound nsfs file, not a bare file)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False
