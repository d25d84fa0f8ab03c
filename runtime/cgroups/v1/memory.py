"""v1 memory: hard limit, memory+swap limit, soft limit (reservation), usage and OOM kills."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.base import CgroupStats
from runtime.cgroups.common import read_int, read_keyed, write
from runtime.cgroups.fs import CgroupFs
from runtime.errors import CgroupError
from runtime.spec.model import Memory

LIMIT = "memory.limit_in_bytes"
MEMSW = "memory.memsw.limit_in_bytes"
SOFT = "memory.soft_limit_in_bytes"
# v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 on 64-bit);
# anything this large is unlimited in practice.
UNLIMITED_FROM = 1 << 62


def wanted(memory: Memory) -> bool:
    return memory.limit is not None or memory.swap is not None or memory.reservation is not None


def _bytes(value: int) -> str:
    return "-1" if value < 0 else str(value)


def apply(fs: CgroupFs, d: Path, memory: Memory, has_memsw: bool) -> None:
    """Write the limits. ``has_memsw``: swap accounting is on (the hierarchy root has
    memory.memsw.limit_in_bytes)."""
    limit, swap = memory.limit, memory.swap
    if swap is not None and not has_memsw:
        # Without swap accounting there is nothing to write swap to. "Unlimited" and
        # "no more than the memory limit" are what hosts without swap do anyway, and
        # are accepted as Docker does; any other figure cannot be honoured.
        if swap >= 0 and swap != limit:
            raise CgroupError(
                str(d / MEMSW),
                f"cannot limit memory+swap to {swap}: swap accounting is off on this host "
                "(boot with swapaccount=1)",
            )
        swap = None
    if limit is not None and limit < 0 and swap is None and has_memsw:
        # Lifting the memory limit must lift memory+swap too: the kernel refuses a
        # memory limit above the memory+swap one.
        swap = -1
    if limit is not None and swap is not None:
        # memsw must stay >= limit after each single write: raise memsw first when it
        # grows, lower the limit first when it shrinks.
        current = read_int(fs, d / MEMSW, default=-1)
        if swap < 0 or current < 0 or swap > current:
            write(fs, d / MEMSW, _bytes(swap))
            write(fs, d / LIMIT, _bytes(limit))
        else:
            write(fs, d / LIMIT, _bytes(limit))
            write(fs, d / MEMSW, _bytes(swap))
    elif limit is not None:
        write(fs, d / LIMIT, _bytes(limit))
    elif swap is not None:
        write(fs, d / MEMSW, _bytes(swap))
    if memory.reservation is not None:
        write(fs, d / SOFT, _bytes(memory.reservation))


def stats(fs: CgroupFs, d: Path, s: CgroupStats) -> CgroupStats:
    limit: int | None = read_int(fs, d / LIMIT, default=-1)
    if limit is None or limit < 0 or limit >= UNLIMITED_FROM:
        limit = None
    return s._replace(memory_current=read_int(fs, d / "memory.usage_in_bytes"),
        memory_peak=read_int(fs, d / "memory.max_usage_in_bytes"),
        memory_limit=limit,
        # oom_kill appeared in memory.oom_control in Linux 4.13.
        oom_kills=read_keyed(fs, d / "memory.oom_control").get("oom_kill", 0),
    )
