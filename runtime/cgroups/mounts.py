"""Reading /proc/self/mountinfo: which cgroup filesystems are mounted where."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

MOUNTINFO = Path("/proc/self/mountinfo")

# The v1 controllers the kernel knows; other words in a cgroup mount's super options
# (rw, xattr, noprefix, release_agent=...) are flags, not hierarchies.
V1_CONTROLLERS = frozenset({
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc", "debug",
})


class MountEntry(NamedTuple):
    mount_point: Path
    fs_type: str
    super_options: tuple[str, ...]

    def v1_hierarchies(self) -> tuple[str, ...]:
        """The controllers (and ``name=...`` hierarchies) a v1 cgroup mount holds."""
        return tuple(
            o for o in self.super_options if o in V1_CONTROLLERS or o.startswith("name=")
        )


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mountinfo(path: Path = MOUNTINFO) -> list[MountEntry]:
    entries: list[MountEntry] = []
    try:
        text = path.read_text()
    except OSError:
        return entries
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or len(fields) < 5:
            continue
        entries.append(
            MountEntry(
                mount_point=Path(_unescape(fields[4])),
                fs_type=fields[sep + 1],
                super_options=tuple(fields[sep + 3].split(",")),
            )
        )
    return entries


def mount_at(point: Path, mountinfo: Path = MOUNTINFO) -> MountEntry | None:
    """The mount whose mount point is ``point`` (the last one: it hides earlier ones)."""
    target = point.resolve()
    found = None
    for entry in read_mountinfo(mountinfo):
        if entry.mount_point == target:
            found = entry
    return found
