"""The cgroup v1 driver (one hierarchy per controller)."""

from runtime.cgroups.v1.driver import CgroupV1, CgroupV1Driver, find_hierarchies

__all__ = ["CgroupV1", "CgroupV1Driver", "find_hierarchies"]
