"""v2 cpuset: cpuset.cpus and cpuset.mems.

Unlike v1, an empty v2 cpuset means "what the parent has", so nothing needs copying
into a new cgroup.
"""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.common import write
from runtime.cgroups.fs import CgroupFs
from runtime.spec.model import Cpu


def wanted(cpu: Cpu) -> bool:
    return cpu.cpus is not None or cpu.mems is not None


def apply(fs: CgroupFs, d: Path, cpu: Cpu) -> None:
    if cpu.cpus is not None:
        write(fs, d / "cpuset.cpus", cpu.cpus)
    if cpu.mems is not None:
        write(fs, d / "cpuset.mems", cpu.mems)
