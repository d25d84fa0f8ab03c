"""The seam between the cgroup drivers and the kernel: cgroupfs files, directories, kill(2).

``CgroupFs`` is the real thing. Unit tests subclass it to play the kernel over a
temporary directory (populating a new cgroup's files on ``mkdir``, reacting to writes
to ``cgroup.freeze``...), so every write the drivers make can be asserted without root.

The methods are thin and raise ``OSError`` as the kernel reports it; ``files`` turns
those into ``CgroupError`` naming the file and the value.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


class CgroupFs:
    def read(self, path: Path) -> str:
        with open(path) as f:
            return f.read()

    def write(self, path: Path, value: str) -> None:
        # No O_CREAT: a file the kernel does not offer is an error (ENOENT), never a
        # new regular file that would make a limit look applied.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            # One write(2) per value: cgroupfs parses each write call on its own.
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def mkdir(self, path: Path) -> None:
        """Make one directory; an existing one raises ``FileExistsError``."""
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def subdirs(self, path: Path) -> list[Path]:
        with os.scandir(path) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]

    def kill(self, pid: int) -> None:
        """SIGKILL one process; one already gone raises ``ProcessLookupError``."""
        os.kill(pid, signal.SIGKILL)
