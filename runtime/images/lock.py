"""Advisory file locks (flock) shared by every process that opens the store.

The command line and the agent work on the same store without a daemon between
them, as podman's processes do: each takes these locks around what it changes.
flock is released by the kernel when a process dies, so a killed pull never
leaves the store locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path, exclusive: bool = True) -> Iterator[int]:
    """Hold an flock on ``path`` (created if missing) for the ``with`` block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False if another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
