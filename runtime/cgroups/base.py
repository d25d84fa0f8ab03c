"""The one small interface every cgroup driver (v1, v2) implements."""

# No ``from __future__ import annotations``: typing.NamedTuple compiles each string
# annotation, a cost every podium-runtime command would pay on import.
from typing import NamedTuple, Protocol

from runtime.spec.model import Resources


class CgroupStats(NamedTuple):
    cpu_usage_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cpu_nr_periods: int = 0
    cpu_nr_throttled: int = 0
    cpu_throttled_ns: int = 0
    memory_current: int = 0  # bytes
    memory_peak: int = 0  # bytes; 0 where the kernel does not track it
    memory_limit: int | None = None  # None: unlimited
    pids_current: int = 0
    pids_limit: int | None = None  # None: unlimited
    oom_kills: int = 0


class Cgroup(Protocol):
    """One container's (or pod's) cgroup, at ``path`` below each hierarchy's root."""

    path: str  # relative to the hierarchy root, no leading slash: "podium/abc"

    def create(self) -> None:
        """Make the cgroup (and missing parents) in every hierarchy; existing is fine."""

    def apply(self, resources: Resources) -> None:
        """Write the limits; fields left None are not touched."""

    def add(self, pid: int) -> None:
        """Move a process into the cgroup (every hierarchy)."""

    def procs(self) -> list[int]:
        """PIDs in the cgroup and below, as the host sees them."""

    def stats(self) -> CgroupStats: ...

    def freeze(self) -> None:
        """Freeze every process; returns once the kernel reports the cgroup frozen."""

    def thaw(self) -> None: ...

    def is_frozen(self) -> bool: ...

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, including ones forking as we go."""

    def remove(self) -> None:
        """Remove the cgroup everywhere (kill first if it still holds processes).

        A cgroup that is already gone is fine.
        """

    def exists(self) -> bool: ...


class CgroupDriver(Protocol):
    version: int  # 1 or 2

    def cgroup(self, path: str) -> Cgroup:
        """The cgroup at ``path`` (``"podium/abc"``); nothing is created until ``create``."""
