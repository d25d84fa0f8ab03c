"""Network namespaces held open by a bind mount, and running code inside one.

Both are done on a thread of their own, never a fork: ``unshare(CLONE_NEWNET)``
and ``setns`` change only the calling thread, so the agent (which runs gRPC
threads) can create and enter namespaces safely. A netlink socket, or a process
started from such a thread, belongs to the thread's namespace for its whole life.

The threads are kept and reused (``_Threads``): starting one took 0.14 ms of CPU
here, and the agent enters or makes namespaces twice per pod start. After each
job a thread goes back to the agent's own network, IPC and UTS namespaces with
``setns``; one that cannot is not reused.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar, overload

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

_MAX_IDLE = 8  # threads kept waiting: as many as pods start at once, and some


class _Thread:
    """One thread that runs the jobs it is given, each then leaving it in the
    process's own network, IPC and UTS namespaces (the main thread's:
    ``/proc/self/ns``): a job may change those three, and nothing else of its
    thread that outlives it."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.usable = True
        # Opened here, by the caller: the homes are the process's, whichever thread
        # (even one inside a pod's namespace) starts this one.
        self._home = [(os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flag)
                      for kind, flag in NAMESPACE_FLAGS.items()]
        threading.Thread(target=self._serve, name="podium-netns", daemon=True).start()

    def run(self, fn: Callable[[], T]) -> tuple[bool, Any]:
        """``fn``'s outcome: (True, what it returned) or (False, what it raised)."""
        self._jobs.put(fn)
        return self._results.get()

    def stop(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        home = self._go_home()  # its starter may have been inside a pod's namespace
        try:
            while (job := self._jobs.get()) is not None:
                if not home:
                    self._results.put((False, NetworkError(
                        "namespace thread: cannot enter the agent's own namespaces")))
                    continue  # until stopped: an unusable thread is not put back
                try:
                    outcome: tuple[bool, Any] = (True, job())
                except BaseException as e:  # handed to the caller's thread
                    outcome = (False, e)
                home = self._go_home()  # before answering: the caller then knows
                self._results.put(outcome)
        finally:
            for fd, _ in self._home:
                os.close(fd)

    def _go_home(self) -> bool:
        """Into the process's namespaces; False (and ``usable`` no more) if not."""
        try:
            for fd, flag in self._home:
                _syscalls.setns(fd, flag)
        except OSError:
            self.usable = False
            return False
        return True


class _Threads:
    """The idle ``_Thread``s; a caller takes one, or starts one when none waits."""

    def __init__(self) -> None:
        self._idle: list[_Thread] = []
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            thread = self._idle.pop() if self._idle else None
        if thread is None:
            thread = _Thread()
        outcome = None
        try:
            outcome = thread.run(fn)
        finally:
            # Not put back unanswered (the caller interrupted): its answer would go
            # to the next caller.
            self._put_back(thread, outcome is not None)
        ok, value = outcome
        if not ok:
            raise value
        result: T = value
        return result

    def _put_back(self, thread: _Thread, answered: bool) -> None:
        with self._lock:
            if answered and thread.usable and len(self._idle) < _MAX_IDLE:
                self._idle.append(thread)
                return
        thread.stop()


_threads = _Threads()


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a namespace thread and hand back its result or exception."""
    return _threads.run(fn)


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


def create_namespace(path: Path, kind: str = "net", hostname: str | None = None) -> None:
    """Make a new ``kind`` namespace (net, ipc or uts) and bind it at ``path``
    (which must not exist); a new UTS namespace gets ``hostname``."""
    create_namespaces({kind: path}, hostname)


def create_namespaces(paths: Mapping[str, Path], hostname: str | None = None,
                      inside: Callable[[], T] | None = None) -> T | None:
    """Make a new namespace of each kind in ``paths`` (net, ipc, uts) and bind it at
    its path (which must not exist); a new UTS namespace gets ``hostname``. Then
    ``inside()``, if given, runs in them, in the thread that made them, and this
    returns what it returned: a socket it opened stays in the new namespace.

    One thread and one unshare for all of them (a pod's IPC and UTS namespaces are
    made at every pod start, so a thread and a system call each count). All or
    none: on a failure, ``inside``'s too, what this call made is removed.
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

    return _in_thread(make)


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
