"""Waking the agent's loop at once: a self-pipe anyone may write to, and inotify.

The loop sleeps between its steps; what it waits for (a new manifest, a pod whose
start has finished on a starter thread, the scheduler's word) wakes it instead of
waiting out the period, so a pod's start is not delayed by polling.

    Waker            ``wake()`` from any thread (or a signal handler); ``wait`` in
                     the loop, on the pipe and any other descriptors, with a timeout
    DirectoryWatch   inotify on one directory: readable when an entry is made,
                     written, renamed or removed; ``changes()`` drains it and
                     names those entries
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DirectoryWatch", "Waker"]

# From <sys/inotify.h>.
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
         | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)


class Waker:
    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        if self._w < 0:
            return  # closed
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is woken already

    def wait(self, timeout: float, fds: Iterable[int] = ()) -> None:
        """Until woken, one of ``fds`` is readable, or ``timeout`` seconds have passed."""
        try:
            ready = select.select([self._r, *fds], [], [], timeout)[0]
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            return
        if self._r in ready:
            try:
                while os.read(self._r, 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        fds, self._r, self._w = (self._r, self._w), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


class DirectoryWatch:
    """inotify on ``directory`` (which must exist); OSError when it cannot be watched."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}",
                          str(directory))
        self.fd: int = int(fd)

    def fileno(self) -> int:
        return self.fd

    def changes(self) -> set[str] | None:
        """The names of the entries made, written, renamed or removed since the last
        call (reads the events without blocking); None when that is not known: the
        kernel's queue overflowed and dropped events, or the directory itself was
        removed or moved."""
        names: set[str] | None = set()
        try:
            while data := os.read(self.fd, 65536):
                names = _event_names(data, names)
        except BlockingIOError:
            pass
        return names

    def close(self) -> None:
        os.close(self.fd)


# struct inotify_event: int wd; uint32_t mask, cookie, len; char name[len] (NUL-padded).
_EVENT = struct.Struct("iIII")


def _event_names(data: bytes, names: set[str] | None) -> set[str] | None:
    """``names`` with those the events in ``data`` add; None once one names nothing
    (an overflow, or an event of the watched directory itself)."""
    offset = 0
    while offset + _EVENT.size <= len(data):
        _, mask, _, length = _EVENT.unpack_from(data, offset)
        start = offset + _EVENT.size
        offset = start + length
        name = data[start:offset].rstrip(b"\0")
        if mask & IN_Q_OVERFLOW or not name:
            names = None
        elif names is not None:
            names.add(os.fsdecode(name))
    return names
