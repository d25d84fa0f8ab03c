"""v1 freezer: FROZEN/THAWED, waiting until the state reads back."""

from __future__ import annotations

import time
from pathlib import Path

from runtime.cgroups.common import POLL, read, write
from runtime.cgroups.fs import CgroupFs
from runtime.errors import CgroupError

STATE = "freezer.state"
# A task in an uninterruptible sleep keeps the cgroup FREEZING; writing FROZEN
# again makes the kernel retry the tasks it could not freeze yet.
REWRITE_EVERY = 0.1


def freeze(fs: CgroupFs, d: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        write(fs, d / STATE, "FROZEN")
        retry_at = time.monotonic() + REWRITE_EVERY
        while time.monotonic() < retry_at:
            if read(fs, d / STATE) == "FROZEN":
                return
            time.sleep(POLL)
        if time.monotonic() > deadline:
            state = read(fs, d / STATE)
            # Leave it running rather than half frozen.
            write(fs, d / STATE, "THAWED")
            raise CgroupError(str(d / STATE), f"still {state} after {timeout:g}s; thawed again")


def thaw(fs: CgroupFs, d: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    write(fs, d / STATE, "THAWED")
    while read(fs, d / STATE) != "THAWED":
        if time.monotonic() > deadline:
            raise CgroupError(str(d / STATE), f"not THAWED after {timeout:g}s")
        time.sleep(POLL)


def is_frozen(fs: CgroupFs, d: Path) -> bool:
    # FREEZING counts as not frozen: some tasks still run.
    return read(fs, d / STATE) == "FROZEN"
