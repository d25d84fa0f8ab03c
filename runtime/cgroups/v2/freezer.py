"""v2 freezing (cgroup.freeze, cgroup.events) and killing (cgroup.kill)."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.common import read_keyed, wait_until, write
from runtime.cgroups.fs import CgroupFs
from runtime.errors import CgroupError


def events(fs: CgroupFs, d: Path) -> dict[str, int]:
    return read_keyed(fs, d / "cgroup.events")


def set_frozen(fs: CgroupFs, d: Path, frozen: bool, timeout: float) -> None:
    want = 1 if frozen else 0
    write(fs, d / "cgroup.freeze", str(want))
    # The write only asks; cgroup.events says when every task has stopped (or resumed).
    if not wait_until(lambda: events(fs, d).get("frozen") == want, timeout):
        if frozen:
            write(fs, d / "cgroup.freeze", "0")  # leave it running rather than half frozen
        verb = "frozen" if frozen else "thawed"
        raise CgroupError(str(d / "cgroup.events"), f"not {verb} after {timeout:g}s")


def is_frozen(fs: CgroupFs, d: Path) -> bool:
    return events(fs, d).get("frozen") == 1


def can_kill(fs: CgroupFs, d: Path) -> bool:
    return fs.exists(d / "cgroup.kill")  # Linux 5.14+


def kill(fs: CgroupFs, d: Path) -> None:
    # The kernel kills the whole subtree, new forks included, in one step.
    write(fs, d / "cgroup.kill", "1")
