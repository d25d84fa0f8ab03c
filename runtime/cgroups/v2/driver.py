"""The cgroup v2 driver: one unified hierarchy, controllers enabled level by level."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups import common
from runtime.cgroups.base import CgroupStats
from runtime.cgroups.fs import CgroupFs
from runtime.cgroups.v2 import cpu, cpuset, freezer, memory, pids
from runtime.errors import CgroupError
from runtime.spec.model import Resources

# The controllers podium writes limits to; each is enabled down to the container's
# cgroup where the hierarchy offers it.
CONTROLLERS = ("cpu", "cpuset", "memory", "pids")


class CgroupV2:
    def __init__(self, root: Path, path: str, fs: CgroupFs, timeout: float) -> None:
        self.path = path
        self._root = root
        self._levels = common.levels(root, path)
        self._dir = self._levels[-1]
        self._fs = fs
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"CgroupV2({self.path!r})"

    def _words(self, file: Path) -> set[str]:
        return set(common.read(self._fs, file).split())

    def _enable(self, parent: Path) -> None:
        """Turn on, in ``parent``'s subtree_control, the controllers we use that it has."""
        offered = self._words(parent / "cgroup.controllers")
        enabled = self._words(parent / "cgroup.subtree_control")
        for name in CONTROLLERS:
            if name in offered and name not in enabled:
                # One write per controller, so a refusal names the one refused.
                common.write(self._fs, parent / "cgroup.subtree_control", f"+{name}")

    def create(self) -> None:
        for level in self._levels:
            self._enable(level.parent)
            common.make_dir(self._fs, level)

    def apply(self, resources: Resources) -> None:
        r = resources
        program = None
        if r.devices:  # only a container's cgroup has rules: load the BPF side then
            from runtime.cgroups.devices import state
            from runtime.cgroups.v2 import devices

            program = devices.program(state(r.devices))  # rules checked before any write
        offered = self._words(self._dir / "cgroup.controllers")
        wanted = [
            ("memory", "a memory limit", memory.wanted(r.memory)),
            ("cpu", "a cpu shares/quota limit", cpu.wanted(r.cpu)),
            ("cpuset", "a cpuset (cpus/mems)", cpuset.wanted(r.cpu)),
            ("pids", "a pids limit", r.pids.limit is not None),
        ]
        # Every controller is checked before the first write.
        for name, what, needed in wanted:
            if needed and name not in offered:
                raise CgroupError(
                    str(self._dir),
                    f"{what} needs the {name} controller, which this cgroup v2 hierarchy "
                    f"does not offer here (cgroup.controllers: {' '.join(sorted(offered))})",
                )
        if memory.wanted(r.memory):
            memory.apply(self._fs, self._dir, r.memory)
        if cpu.wanted(r.cpu):
            cpu.apply(self._fs, self._dir, r.cpu)
        if cpuset.wanted(r.cpu):
            cpuset.apply(self._fs, self._dir, r.cpu)
        pids.apply(self._fs, self._dir, r.pids)
        if program is not None:
            from runtime.cgroups.v2.devices import attach

            attach(self._dir, program)

    def add(self, pid: int) -> None:
        common.write(self._fs, self._dir / "cgroup.procs", str(pid))

    def procs(self) -> list[int]:
        return sorted(common.procs_below(self._fs, self._dir))

    def stats(self) -> CgroupStats:
        s = cpu.stats(self._fs, self._dir, CgroupStats())
        if self._fs.exists(self._dir / "memory.current"):
            s = memory.stats(self._fs, self._dir, s)
        if self._fs.exists(self._dir / "pids.current"):
            s = pids.stats(self._fs, self._dir, s)
        return s

    def freeze(self) -> None:
        freezer.set_frozen(self._fs, self._dir, True, self._timeout)

    def thaw(self) -> None:
        freezer.set_frozen(self._fs, self._dir, False, self._timeout)

    def is_frozen(self) -> bool:
        return self._fs.exists(self._dir) and freezer.is_frozen(self._fs, self._dir)

    def kill(self) -> None:
        if not self.procs():
            return
        if freezer.can_kill(self._fs, self._dir):
            freezer.kill(self._fs, self._dir)
            if common.wait_until(lambda: not self.procs(), self._timeout):
                return
            raise CgroupError(
                str(self._dir),
                f"processes {self.procs()} still alive {self._timeout:g}s after cgroup.kill",
            )
        # Before Linux 5.14: stop them forking, signal each, let them die.
        common.freeze_and_kill(
            self._fs, str(self._dir), self.procs, self.freeze, self.thaw, self._timeout
        )

    def remove(self) -> None:
        if self._fs.is_dir(self._dir) and self.procs():
            self.kill()
        common.remove_tree(self._fs, self._dir, self._timeout)

    def exists(self) -> bool:
        return self._fs.is_dir(self._dir)


class CgroupV2Driver:
    """cgroup v2: every controller in one hierarchy at ``root``."""

    version = 2

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), *, fs: CgroupFs | None = None,
                 timeout: float = common.DEFAULT_TIMEOUT) -> None:
        self.root = root
        self.fs = fs if fs is not None else CgroupFs()
        self.timeout = timeout

    def cgroup(self, path: str) -> CgroupV2:
        return CgroupV2(self.root, path.strip("/"), self.fs, self.timeout)
