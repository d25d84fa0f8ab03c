"""The cgroup v1 driver: one hierarchy per controller (or group of co-mounted ones)."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups import common
from runtime.cgroups.base import CgroupStats
from runtime.cgroups.fs import CgroupFs
from runtime.cgroups.mounts import MOUNTINFO, V1_CONTROLLERS, read_mountinfo
from runtime.cgroups.v1 import cpu, cpuset, devices, freezer, memory, pids
from runtime.errors import CgroupError
from runtime.spec.model import Resources


def find_hierarchies(root: Path, mountinfo: Path = MOUNTINFO) -> dict[str, Path]:
    """Each v1 controller (and ``name=...`` hierarchy) → its mount point below ``root``.

    The kernel's mount table says where each hierarchy really is; co-mounted ones
    (cpu,cpuacct) share a mount point. A test tree under a temporary root is not in
    the mount table, so there the directories themselves are read: "cpu,cpuacct" holds
    both, a symlink "cpu" to it adds nothing, and a directory of no known controller
    is a named hierarchy (systemd).
    """
    base = root.resolve()
    found: dict[str, Path] = {}
    for entry in read_mountinfo(mountinfo):
        if entry.fs_type == "cgroup" and entry.mount_point.is_relative_to(base):
            for name in entry.v1_hierarchies():
                found.setdefault(name, entry.mount_point)
    if found or not base.is_dir():
        return found
    for child in sorted(base.iterdir()):
        if not child.is_dir() or (child / "cgroup.controllers").exists():
            continue  # not a hierarchy, or the cgroup2 one of a hybrid host
        names = child.resolve().name.split(",")
        for name in names:
            key = name if name in V1_CONTROLLERS else f"name={name}"
            found.setdefault(key, child.resolve())
    return found


class CgroupV1:
    def __init__(self, path: str, hierarchies: dict[str, Path], fs: CgroupFs,
                 timeout: float) -> None:
        self.path = path
        self._hierarchies = hierarchies
        self._fs = fs
        self._timeout = timeout
        common.levels(Path("/"), path)  # refuse "" and ".." now, not at the first write

    def __repr__(self) -> str:
        return f"CgroupV1({self.path!r})"

    def _roots(self) -> list[Path]:
        return sorted(set(self._hierarchies.values()))

    def _dirs(self) -> list[Path]:
        return [root / self.path for root in self._roots()]

    def _dir(self, controller: str) -> Path | None:
        root = self._hierarchies.get(controller)
        return None if root is None else root / self.path

    def _need(self, controller: str, what: str) -> Path:
        d = self._dir(controller)
        if d is None:
            raise CgroupError(
                self.path, f"{what} needs the v1 {controller} controller, which is not mounted"
            )
        return d

    def create(self) -> None:
        for root in self._roots():
            self._make(root)
            if self._hierarchies.get("cpuset") == root:
                # Every level, not only those made here: another container's start may
                # have made a shared parent a moment ago and not filled it yet (a new
                # cpuset is empty, and its children would copy the emptiness).
                for level in common.levels(root, self.path):
                    cpuset.inherit(self._fs, level)

    def _make(self, root: Path) -> None:
        """mkdir the cgroup in one hierarchy, and its parents if missing.

        One mkdir in the usual case, where the parent exists already: this runs for
        every container start, in every hierarchy."""
        leaf = root / self.path
        try:
            self._fs.mkdir(leaf)
            return
        except FileExistsError:
            return
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CgroupError(str(leaf), f"cannot create: {e.strerror or e}") from None
        for level in common.levels(root, self.path):
            try:
                self._fs.mkdir(level)
            except FileExistsError:
                pass
            except OSError as e:
                raise CgroupError(str(level), f"cannot create: {e.strerror or e}") from None

    def apply(self, resources: Resources) -> None:
        r = resources
        # Find every controller first, so a missing one fails before anything is written.
        mem = self._need("memory", "a memory limit") if memory.wanted(r.memory) else None
        cpu_dir = self._need("cpu", "a cpu shares/quota limit") if cpu.wanted(r.cpu) else None
        set_dir = self._need("cpuset", "a cpuset (cpus/mems)") if cpuset.wanted(r.cpu) else None
        pid_dir = self._need("pids", "a pids limit") if r.pids.limit is not None else None
        dev_dir = self._need("devices", "device rules") if r.devices else None
        if mem is not None:
            root = self._hierarchies["memory"]
            has_memsw = self._fs.exists(root / memory.MEMSW)
            memory.apply(self._fs, mem, r.memory, has_memsw)
        if cpu_dir is not None:
            cpu.apply(self._fs, cpu_dir, r.cpu)
        if set_dir is not None:
            cpuset.apply(self._fs, set_dir, r.cpu)
        if pid_dir is not None:
            pids.apply(self._fs, pid_dir, r.pids)
        if dev_dir is not None:
            devices.apply(self._fs, dev_dir, r.devices)

    def add(self, pid: int) -> None:
        for d in self._dirs():
            common.write(self._fs, d / "cgroup.procs", str(pid))

    def procs(self) -> list[int]:
        # Every hierarchy: a process is only gone once no hierarchy holds it.
        found: set[int] = set()
        for d in self._dirs():
            found |= common.procs_below(self._fs, d)
        return sorted(found)

    def stats(self) -> CgroupStats:
        s = CgroupStats()
        s = cpu.stats(self._fs, self._dir("cpu"), self._dir("cpuacct"), s)
        mem = self._dir("memory")
        if mem is not None:
            s = memory.stats(self._fs, mem, s)
        pid_dir = self._dir("pids")
        if pid_dir is not None:
            s = pids.stats(self._fs, pid_dir, s)
        return s

    def freeze(self) -> None:
        freezer.freeze(self._fs, self._need("freezer", "freezing"), self._timeout)

    def thaw(self) -> None:
        freezer.thaw(self._fs, self._need("freezer", "thawing"), self._timeout)

    def is_frozen(self) -> bool:
        d = self._dir("freezer")
        return d is not None and self._fs.exists(d) and freezer.is_frozen(self._fs, d)

    def kill(self) -> None:
        has_freezer = self._dir("freezer") is not None
        common.freeze_and_kill(
            self._fs,
            self.path,
            self.procs,
            self.freeze if has_freezer else None,
            self.thaw if has_freezer else None,
            self._timeout,
        )

    def remove(self) -> None:
        # The usual case, once the container has exited: one rmdir per hierarchy.
        busy = []
        for d in self._dirs():
            try:
                self._fs.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                busy.append(d)  # processes or child cgroups left: the slow path below
        if not busy:
            return
        if self.procs():
            self.kill()
        for d in busy:
            common.remove_tree(self._fs, d, self._timeout)

    def exists(self) -> bool:
        return any(self._fs.is_dir(d) for d in self._dirs())


class CgroupV1Driver:
    """cgroup v1: each controller in its own hierarchy below ``root``."""

    version = 1

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), *, fs: CgroupFs | None = None,
                 mountinfo: Path = MOUNTINFO, timeout: float = common.DEFAULT_TIMEOUT) -> None:
        self.root = root
        self.fs = fs if fs is not None else CgroupFs()
        self.timeout = timeout
        self.hierarchies = find_hierarchies(root, mountinfo)
        if not self.hierarchies:
            raise CgroupError(str(root), "no cgroup v1 hierarchy is mounted here")

    def cgroup(self, path: str) -> CgroupV1:
        return CgroupV1(path.strip("/"), self.hierarchies, self.fs, self.timeout)
