"""Control groups: one small interface (``Cgroup``), a v1 and a v2 driver.

``detect()`` picks the driver once, from what is mounted at the cgroupfs root:
a cgroup2 filesystem there means v2 (every current distribution); anything else,
including a hybrid host with v1 controllers and a mostly empty unified hierarchy
below, means v1. The root is a parameter so tests can point it at a temporary
directory laid out like cgroupfs.

Every failure is a ``runtime.errors.CgroupError`` naming the file and the value.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cgroups.base import Cgroup, CgroupDriver, CgroupStats
from runtime.cgroups.fs import CgroupFs
from runtime.cgroups.mounts import MOUNTINFO, mount_at

if TYPE_CHECKING:
    from runtime.cgroups.v1 import CgroupV1Driver
    from runtime.cgroups.v2 import CgroupV2Driver, weight_from_shares

DEFAULT_ROOT = Path("/sys/fs/cgroup")

__all__ = [
    "Cgroup",
    "CgroupDriver",
    "CgroupFs",
    "CgroupStats",
    "CgroupV1Driver",
    "CgroupV2Driver",
    "DEFAULT_ROOT",
    "cgroup_version",
    "detect",
    "weight_from_shares",
]


def cgroup_version(root: Path = DEFAULT_ROOT, *, mountinfo: Path = MOUNTINFO) -> int:
    """2 if ``root`` is a cgroup2 mount, else 1.

    A directory that is no mount point at all (a test tree) is judged by its layout:
    only a cgroup2 root has ``cgroup.controllers`` at its top.
    """
    entry = mount_at(root, mountinfo)
    if entry is not None:
        return 2 if entry.fs_type == "cgroup2" else 1
    return 2 if (root / "cgroup.controllers").is_file() else 1


def detect(root: Path = DEFAULT_ROOT, *, mountinfo: Path = MOUNTINFO) -> CgroupDriver:
    """The driver for the cgroup hierarchy (or hierarchies) mounted at ``root``.

    Only the driver this host needs is imported: ``podium-runtime`` pays for one."""
    if cgroup_version(root, mountinfo=mountinfo) == 2:
        from runtime.cgroups.v2 import CgroupV2Driver

        return CgroupV2Driver(root)
    from runtime.cgroups.v1 import CgroupV1Driver

    return CgroupV1Driver(root, mountinfo=mountinfo)


def __getattr__(name: str) -> Any:
    if name == "CgroupV1Driver":
        from runtime.cgroups.v1 import CgroupV1Driver

        return CgroupV1Driver
    if name in ("CgroupV2Driver", "weight_from_shares"):
        from runtime.cgroups import v2

        return getattr(v2, name)
    raise AttributeError(f"module 'runtime.cgroups' has no attribute {name!r}")
