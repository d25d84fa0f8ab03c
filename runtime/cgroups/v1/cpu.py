"""v1 cpu and cpuacct: shares, CFS quota/period, usage."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.cgroups.base import CgroupStats
from runtime.cgroups.common import read_int, read_keyed, write
from runtime.cgroups.fs import CgroupFs
from runtime.errors import CgroupError
from runtime.spec.model import Cpu

NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def wanted(cpu: Cpu) -> bool:
    return cpu.shares is not None or cpu.quota is not None or cpu.period is not None


def apply(fs: CgroupFs, d: Path, cpu: Cpu) -> None:
    if cpu.shares is not None:
        write(fs, d / "cpu.shares", str(cpu.shares))
    quota = None if cpu.quota is None else str(cpu.quota if cpu.quota > 0 else -1)
    period = None if cpu.period is None else str(cpu.period)
    if quota is not None and period is not None:
        # The kernel checks quota/period against the parent's on every write, so the
        # new period can be refused next to the old quota; the other order then works.
        try:
            write(fs, d / "cpu.cfs_period_us", period)
        except CgroupError:
            write(fs, d / "cpu.cfs_quota_us", quota)
            write(fs, d / "cpu.cfs_period_us", period)
            return
        write(fs, d / "cpu.cfs_quota_us", quota)
    elif period is not None:
        write(fs, d / "cpu.cfs_period_us", period)
    elif quota is not None:
        write(fs, d / "cpu.cfs_quota_us", quota)


def stats(fs: CgroupFs, cpu_dir: Path | None, cpuacct_dir: Path | None,
          s: CgroupStats) -> CgroupStats:
    if cpuacct_dir is not None:
        usage = read_int(fs, cpuacct_dir / "cpuacct.usage")
        if fs.exists(cpuacct_dir / "cpuacct.usage_user"):
            user = read_int(fs, cpuacct_dir / "cpuacct.usage_user")
            system = read_int(fs, cpuacct_dir / "cpuacct.usage_sys")
        else:
            # Older kernels only give cpuacct.stat, counted in USER_HZ ticks.
            ticks = read_keyed(fs, cpuacct_dir / "cpuacct.stat")
            user = ticks.get("user", 0) * NS_PER_TICK
            system = ticks.get("system", 0) * NS_PER_TICK
        s = s._replace(cpu_usage_ns=usage, cpu_user_ns=user, cpu_system_ns=system)
    if cpu_dir is not None:
        st = read_keyed(fs, cpu_dir / "cpu.stat")
        s = s._replace(cpu_nr_periods=st.get("nr_periods", 0),
            cpu_nr_throttled=st.get("nr_throttled", 0),
            cpu_throttled_ns=st.get("throttled_time", 0),
        )
    return s
