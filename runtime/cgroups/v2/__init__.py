"""The cgroup v2 driver (one unified hierarchy)."""

from runtime.cgroups.v2.cpu import weight_from_shares
from runtime.cgroups.v2.driver import CgroupV2, CgroupV2Driver

__all__ = ["CgroupV2", "CgroupV2Driver", "weight_from_shares"]
