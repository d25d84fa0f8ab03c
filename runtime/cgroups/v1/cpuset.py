"""v1 cpuset: which CPUs and memory nodes the cgroup may use."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.common import read, read_optional, write
from runtime.cgroups.fs import CgroupFs
from runtime.spec.model import Cpu

FILES = ("cpuset.cpus", "cpuset.mems")


def wanted(cpu: Cpu) -> bool:
    return cpu.cpus is not None or cpu.mems is not None


def inherit(fs: CgroupFs, d: Path) -> None:
    """Copy cpus/mems from the parent where ``d`` has none.

    A new v1 cpuset starts empty, and the kernel refuses to let a process join a
    cpuset with no CPUs or memory nodes (ENOSPC); runc and systemd fill it the same way.
    """
    for name in FILES:
        if not read_optional(fs, d / name):
            write(fs, d / name, read(fs, d.parent / name))


def apply(fs: CgroupFs, d: Path, cpu: Cpu) -> None:
    if cpu.cpus is not None:
        write(fs, d / "cpuset.cpus", cpu.cpus)
    if cpu.mems is not None:
        write(fs, d / "cpuset.mems", cpu.mems)
