"""v2 cpu: cpu.weight (from v1-style shares), cpu.max, cpu.stat."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.base import CgroupStats
from runtime.cgroups.common import read, read_keyed, write
from runtime.cgroups.fs import CgroupFs
from runtime.spec.model import Cpu

MIN_SHARES, MAX_SHARES = 2, 262144


def weight_from_shares(shares: int) -> int:
    """Map cpu.shares (2..262144) linearly onto cpu.weight (1..10000).

    The mapping runc, crun and systemd use, so a spec means the same on either
    version; out-of-range shares are clamped as the v1 kernel clamps them.
    """
    shares = min(max(shares, MIN_SHARES), MAX_SHARES)
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def wanted(cpu: Cpu) -> bool:
    return cpu.shares is not None or cpu.quota is not None or cpu.period is not None


def apply(fs: CgroupFs, d: Path, cpu: Cpu) -> None:
    if cpu.shares is not None:
        write(fs, d / "cpu.weight", str(weight_from_shares(cpu.shares)))
    if cpu.quota is None and cpu.period is None:
        return
    if cpu.quota is None:
        # cpu.max takes the quota first: keep the one already there.
        quota = read(fs, d / "cpu.max").split()[0]
    else:
        quota = str(cpu.quota) if cpu.quota > 0 else "max"
    # A lone quota leaves the period as it is.
    value = quota if cpu.period is None else f"{quota} {cpu.period}"
    write(fs, d / "cpu.max", value)


def stats(fs: CgroupFs, d: Path, s: CgroupStats) -> CgroupStats:
    # cpu.stat exists in every cgroup; the throttling lines only with the cpu controller.
    st = read_keyed(fs, d / "cpu.stat")
    return s._replace(cpu_usage_ns=st.get("usage_usec", 0) * 1000,
        cpu_user_ns=st.get("user_usec", 0) * 1000,
        cpu_system_ns=st.get("system_usec", 0) * 1000,
        cpu_nr_periods=st.get("nr_periods", 0),
        cpu_nr_throttled=st.get("nr_throttled", 0),
        cpu_throttled_ns=st.get("throttled_usec", 0) * 1000,
    )
