"""v2 memory: memory.max, memory.swap.max, memory.low; usage, peak and OOM kills."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.base import CgroupStats
from runtime.cgroups.common import parse_int, read_int, read_keyed, read_optional, write
from runtime.cgroups.fs import CgroupFs
from runtime.errors import CgroupError
from runtime.spec.model import Memory


def wanted(memory: Memory) -> bool:
    return memory.limit is not None or memory.swap is not None or memory.reservation is not None


def swap_value(d: Path, memory: Memory) -> str | None:
    """memory.swap.max from OCI's memory+swap figure: swap alone is what v2 limits."""
    swap, limit = memory.swap, memory.limit
    if swap is None:
        return None
    if swap < 0:
        return "max"
    if limit is None or limit < 0:
        raise CgroupError(
            str(d / "memory.swap.max"),
            f"memory+swap {swap} needs a memory limit to take the swap part from",
        )
    if swap < limit:
        raise CgroupError(
            str(d / "memory.swap.max"),
            f"memory+swap {swap} is below the memory limit {limit}",
        )
    return str(swap - limit)


def apply(fs: CgroupFs, d: Path, memory: Memory) -> None:
    swap = swap_value(d, memory)  # checked before anything is written
    if memory.limit is not None:
        write(fs, d / "memory.max", "max" if memory.limit < 0 else str(memory.limit))
    if swap is not None:
        if fs.exists(d / "memory.swap.max"):
            write(fs, d / "memory.swap.max", swap)
        elif swap not in ("max", "0"):
            # No swap accounting: "unlimited" and "no swap" need no file (Docker
            # accepts them the same way); a real swap allowance cannot be kept.
            raise CgroupError(
                str(d / "memory.swap.max"),
                f"cannot limit swap to {swap}: the kernel has no swap accounting here",
            )
    if memory.reservation is not None:
        low = "max" if memory.reservation < 0 else str(memory.reservation)
        write(fs, d / "memory.low", low)


def stats(fs: CgroupFs, d: Path, s: CgroupStats) -> CgroupStats:
    text = read_optional(fs, d / "memory.max")
    limit = None if text in (None, "", "max") else parse_int(d / "memory.max", text)
    return s._replace(memory_current=read_int(fs, d / "memory.current"),
        memory_peak=read_int(fs, d / "memory.peak"),  # Linux 5.19+
        memory_limit=limit,
        oom_kills=read_keyed(fs, d / "memory.events").get("oom_kill", 0),
    )
