"""v1 pids: the most tasks the cgroup may hold."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.base import CgroupStats
from runtime.cgroups.common import parse_int, read_int, read_optional, write
from runtime.cgroups.fs import CgroupFs
from runtime.spec.model import Pids


def limit_value(pids: Pids) -> str | None:
    """What pids.max takes (the same on v1 and v2): "max" for -1 or 0 (unlimited)."""
    if pids.limit is None:
        return None
    return "max" if pids.limit <= 0 else str(pids.limit)


def apply(fs: CgroupFs, d: Path, pids: Pids) -> None:
    value = limit_value(pids)
    if value is not None:
        write(fs, d / "pids.max", value)


def stats(fs: CgroupFs, d: Path, s: CgroupStats) -> CgroupStats:
    text = read_optional(fs, d / "pids.max")
    limit = None if text in (None, "", "max") else parse_int(d / "pids.max", text)
    return s._replace(pids_current=read_int(fs, d / "pids.current"), pids_limit=limit)
