"""The v2 driver against a temporary directory that plays cgroupfs (no root needed)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from runtime.cgroups import CgroupFs, CgroupV2Driver, detect, weight_from_shares
from runtime.cgroups.v2 import CgroupV2
from runtime.errors import CgroupError
from runtime.spec.model import Cpu, Memory, Pids, Resources

# What the kernel puts in a new cgroup directory, per enabled controller.
DEFAULTS: dict[str, dict[str, str]] = {
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {
        "memory.max": "max",
        "memory.low": "0",
        "memory.swap.max": "max",
        "memory.current": "0",
        "memory.peak": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
    "io": {},
    "hugetlb": {},
}


class FakeV2Kernel(CgroupFs):
    """The unified hierarchy over a temporary directory, with the kernel's reactions
    to writes: subtree_control, cgroup.procs, cgroup.freeze, cgroup.kill."""

    def __init__(self, root: Path, controllers: str = "cpuset cpu io memory hugetlb pids",
                 has_kill: bool = True, has_swap: bool = True) -> None:
        self.root = root
        self.has_kill = has_kill
        self.has_swap = has_swap
        self.writes: list[tuple[str, str]] = []
        self.killed: list[int] = []
        self.stuck = False  # cgroup.freeze never takes effect
        (root / "cgroup.controllers").write_text(controllers + "\n")
        (root / "cgroup.subtree_control").write_text("\n")
        (root / "cgroup.procs").write_text("")
        (root / "cpu.stat").write_text("usage_usec 0\nuser_usec 0\nsystem_usec 0\n")

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        enabled = (path.parent / "cgroup.subtree_control").read_text().split()
        files = {
            "cgroup.controllers": " ".join(enabled) + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.procs": "",
            "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.freeze": "0\n",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        }
        if self.has_kill:
            files["cgroup.kill"] = ""
        for c in enabled:
            files.update(DEFAULTS[c])
        if not self.has_swap:
            files.pop("memory.swap.max", None)
        for name, value in files.items():
            (path / name).write_text(value)

    def rmdir(self, path: Path) -> None:
        for f in path.iterdir():
            if f.is_file():
                f.unlink()
        super().rmdir(path)

    def write(self, path: Path, value: str) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        self.writes.append((str(path.relative_to(self.root)), value))
        d = path.parent
        if path.name == "cgroup.subtree_control":
            offered = (d / "cgroup.controllers").read_text().split()
            enabled = path.read_text().split()
            name = value[1:]
            if name not in offered:
                raise OSError(errno.ENOENT, "No such file or directory")
            value = " ".join(sorted({*enabled, name})) + "\n"
        elif path.name == "cgroup.procs":
            value = path.read_text() + value + "\n"
        elif path.name == "cgroup.freeze" and not self.stuck:
            (d / "cgroup.events").write_text(f"populated 1\nfrozen {value}\n")
        elif path.name == "cgroup.kill":
            for procs in d.rglob("cgroup.procs"):
                self.killed += [int(p) for p in procs.read_text().split()]
                procs.write_text("")
        path.write_text(value)

    def kill(self, pid: int) -> None:
        self.killed.append(pid)
        for procs in self.root.rglob("cgroup.procs"):
            pids = [p for p in procs.read_text().split() if p != str(pid)]
            procs.write_text("".join(p + "\n" for p in pids))


@pytest.fixture
def kernel(tmp_path: Path) -> FakeV2Kernel:
    return FakeV2Kernel(tmp_path)


@pytest.fixture
def driver(kernel: FakeV2Kernel) -> CgroupV2Driver:
    return CgroupV2Driver(kernel.root, fs=kernel, timeout=0.3)


def created(driver: CgroupV2Driver, kernel: FakeV2Kernel, path: str = "podium/a") -> CgroupV2:
    cg = driver.cgroup(path)
    cg.create()
    kernel.writes.clear()
    return cg


# --- conversion and detection ---


@pytest.mark.parametrize("shares,weight", [
    (2, 1), (1024, 39), (512, 20), (262144, 10000), (0, 1), (1, 1), (10**6, 10000),
])
def test_weight_from_shares(shares: int, weight: int) -> None:
    assert weight_from_shares(shares) == weight


def test_weight_formula_across_range() -> None:
    for shares in range(2, 262145, 997):
        assert weight_from_shares(shares) == 1 + ((shares - 2) * 9999) // 262142


def test_detect_v2_from_layout(kernel: FakeV2Kernel) -> None:
    d = detect(kernel.root, mountinfo=Path("/nonexistent"))
    assert isinstance(d, CgroupV2Driver)
    assert d.version == 2


def test_detect_mount_table_wins_over_layout(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    (tmp_path / "memory").mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"31 23 0:28 / {tmp_path} rw - tmpfs tmpfs rw\n"
        f"35 31 0:32 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
    )
    assert detect(tmp_path, mountinfo=mountinfo).version == 1


# --- create ---


def test_create_enables_offered_controllers_at_every_level(
    driver: CgroupV2Driver, kernel: FakeV2Kernel
) -> None:
    cg = driver.cgroup("podium/pod1/c1")
    cg.create()
    assert (kernel.root / "podium/pod1/c1").is_dir()
    enable = [("cgroup.subtree_control", f"+{c}") for c in ("cpu", "cpuset", "memory", "pids")]
    assert kernel.writes == (
        enable
        + [(f"podium/{f}", v) for f, v in enable]
        + [(f"podium/pod1/{f}", v) for f, v in enable]
    )
    assert (kernel.root / "podium/pod1/c1/cgroup.controllers").read_text().split() == [
        "cpu", "cpuset", "memory", "pids"]
    assert (kernel.root / "podium/pod1/c1/cgroup.subtree_control").read_text().strip() == ""
    kernel.writes.clear()
    cg.create()  # existing is fine; nothing enabled twice
    assert kernel.writes == []


def test_create_skips_controllers_the_hierarchy_lacks(tmp_path: Path) -> None:
    # A hybrid host's unified hierarchy: only hugetlb.
    kernel = FakeV2Kernel(tmp_path, controllers="hugetlb")
    cg = CgroupV2Driver(tmp_path, fs=kernel).cgroup("podium/a")
    cg.create()
    assert cg.exists()
    assert kernel.writes == []
    with pytest.raises(CgroupError, match=r"memory limit needs the memory controller.*"
                                          r"cgroup\.controllers: \)"):
        cg.apply(Resources(memory=Memory(limit=1 << 20)))
    with pytest.raises(CgroupError, match="pids limit needs the pids controller"):
        cg.apply(Resources(pids=Pids(limit=10)))
    cg.apply(Resources())  # nothing asked, nothing needed
    assert kernel.writes == []


def test_create_names_a_refused_controller(driver: CgroupV2Driver, kernel: FakeV2Kernel,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = kernel.write

    def busy(path: Path, value: str) -> None:
        if path.name == "cgroup.subtree_control" and value == "+memory":
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        real_write(path, value)

    monkeypatch.setattr(kernel, "write", busy)
    with pytest.raises(CgroupError) as info:
        driver.cgroup("podium/a").create()
    assert info.value.path == str(kernel.root / "cgroup.subtree_control")
    assert "'+memory'" in str(info.value)


# --- apply ---


def test_memory(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    cg = created(driver, kernel)
    cg.apply(Resources(memory=Memory(limit=256 << 20, swap=384 << 20, reservation=64 << 20)))
    assert kernel.writes == [
        ("podium/a/memory.max", str(256 << 20)),
        ("podium/a/memory.swap.max", str(128 << 20)),
        ("podium/a/memory.low", str(64 << 20)),
    ]
    kernel.writes.clear()
    cg.apply(Resources(memory=Memory(limit=-1, swap=-1)))
    assert kernel.writes == [("podium/a/memory.max", "max"), ("podium/a/memory.swap.max", "max")]


@pytest.mark.parametrize("memory,match", [
    (Memory(swap=1 << 20), "needs a memory limit"),
    (Memory(limit=2 << 20, swap=1 << 20), "below the memory limit"),
])
def test_bad_swap_writes_nothing(driver: CgroupV2Driver, kernel: FakeV2Kernel,
                                 memory: Memory, match: str) -> None:
    cg = created(driver, kernel)
    with pytest.raises(CgroupError, match=match):
        cg.apply(Resources(memory=memory))
    assert kernel.writes == []


def test_swap_without_swap_accounting(tmp_path: Path) -> None:
    kernel = FakeV2Kernel(tmp_path, has_swap=False)
    cg = CgroupV2Driver(tmp_path, fs=kernel).cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    cg.apply(Resources(memory=Memory(limit=1 << 20, swap=1 << 20)))  # no swap: nothing to keep
    assert kernel.writes == [("podium/a/memory.max", str(1 << 20))]
    with pytest.raises(CgroupError, match=r"memory\.swap\.max.*no swap accounting"):
        cg.apply(Resources(memory=Memory(limit=1 << 20, swap=2 << 20)))


def test_cpu(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    cg = created(driver, kernel)
    cg.apply(Resources(cpu=Cpu(shares=1024, quota=50000, period=100000, cpus="0-1", mems="0")))
    assert kernel.writes == [
        ("podium/a/cpu.weight", "39"),
        ("podium/a/cpu.max", "50000 100000"),
        ("podium/a/cpuset.cpus", "0-1"),
        ("podium/a/cpuset.mems", "0"),
    ]


@pytest.mark.parametrize("cpu,value", [
    (Cpu(quota=-1, period=50000), "max 50000"),
    (Cpu(quota=20000), "20000"),
    (Cpu(period=20000), "max 20000"),  # the quota already there is kept
])
def test_cpu_max(driver: CgroupV2Driver, kernel: FakeV2Kernel, cpu: Cpu, value: str) -> None:
    cg = created(driver, kernel)
    cg.apply(Resources(cpu=cpu))
    assert kernel.writes == [("podium/a/cpu.max", value)]


@pytest.mark.parametrize("limit,value", [(32, "32"), (-1, "max"), (0, "max")])
def test_pids(driver: CgroupV2Driver, kernel: FakeV2Kernel, limit: int, value: str) -> None:
    cg = created(driver, kernel)
    cg.apply(Resources(pids=Pids(limit=limit)))
    assert kernel.writes == [("podium/a/pids.max", value)]


def test_apply_before_create_is_an_error(driver: CgroupV2Driver) -> None:
    with pytest.raises(CgroupError, match=r"cgroup\.controllers: cannot read"):
        driver.cgroup("podium/none").apply(Resources(pids=Pids(limit=5)))


# --- processes, stats ---


def test_add_and_procs(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    cg = created(driver, kernel)
    cg.add(500)
    assert kernel.writes == [("podium/a/cgroup.procs", "500")]
    sub = driver.cgroup("podium/a/b")
    sub.create()
    sub.add(501)
    assert cg.procs() == [500, 501]
    assert sub.procs() == [501]


def test_stats(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    created(driver, kernel)
    d = kernel.root / "podium/a"
    (d / "cpu.stat").write_text(
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 9\n"
        "nr_throttled 2\nthrottled_usec 40\nnr_bursts 0\nburst_usec 0\n")
    (d / "memory.current").write_text("4096\n")
    (d / "memory.peak").write_text("8192\n")
    (d / "memory.max").write_text("1048576\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 0\n")
    (d / "pids.current").write_text("3\n")
    (d / "pids.max").write_text("max\n")
    s = driver.cgroup("podium/a").stats()
    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) == (1_500_000, 1_000_000, 500_000)
    assert (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns) == (9, 2, 40_000)
    assert (s.memory_current, s.memory_peak, s.memory_limit) == (4096, 8192, 1048576)
    assert s.oom_kills == 2
    assert (s.pids_current, s.pids_limit) == (3, None)


def test_stats_without_peak_or_controllers(tmp_path: Path) -> None:
    kernel = FakeV2Kernel(tmp_path)
    cg = CgroupV2Driver(tmp_path, fs=kernel).cgroup("a")
    cg.create()
    (tmp_path / "a/memory.peak").unlink()  # before Linux 5.19
    (tmp_path / "a/memory.current").write_text("100\n")
    s = cg.stats()
    assert (s.memory_current, s.memory_peak, s.memory_limit) == (100, 0, None)
    (tmp_path / "hybrid").mkdir()
    bare = FakeV2Kernel(tmp_path / "hybrid", controllers="hugetlb")
    cg2 = CgroupV2Driver(bare.root, fs=bare).cgroup("b")
    cg2.create()
    s2 = cg2.stats()
    assert (s2.memory_limit, s2.pids_limit) == (None, None)


# --- freeze, kill, remove ---


def test_freeze_thaw_wait_for_events(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    cg = created(driver, kernel)
    assert not cg.is_frozen()
    cg.freeze()
    assert cg.is_frozen()
    cg.thaw()
    assert not cg.is_frozen()
    assert kernel.writes == [("podium/a/cgroup.freeze", "1"), ("podium/a/cgroup.freeze", "0")]


def test_freeze_that_never_completes(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    cg = created(driver, kernel)
    kernel.stuck = True
    with pytest.raises(CgroupError, match=r"cgroup\.events: not frozen after"):
        cg.freeze()
    assert kernel.writes == [("podium/a/cgroup.freeze", "1"), ("podium/a/cgroup.freeze", "0")]


def test_kill_uses_cgroup_kill(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    cg = created(driver, kernel)
    cg.add(700)
    sub = driver.cgroup("podium/a/b")
    sub.create()
    sub.add(701)
    kernel.writes.clear()
    cg.kill()
    assert kernel.writes == [("podium/a/cgroup.kill", "1")]
    assert sorted(kernel.killed) == [700, 701]
    assert cg.procs() == []


def test_kill_without_cgroup_kill_freezes_and_signals(tmp_path: Path) -> None:
    kernel = FakeV2Kernel(tmp_path, has_kill=False)  # before Linux 5.14
    cg = CgroupV2Driver(tmp_path, fs=kernel).cgroup("podium/a")
    cg.create()
    cg.add(800)
    kernel.writes.clear()
    cg.kill()
    assert kernel.killed == [800]
    assert kernel.writes == [("podium/a/cgroup.freeze", "1"), ("podium/a/cgroup.freeze", "0")]


def test_remove(driver: CgroupV2Driver, kernel: FakeV2Kernel) -> None:
    cg = created(driver, kernel)
    driver.cgroup("podium/a/b/c").create()
    driver.cgroup("podium/a/b/c").add(900)
    cg.remove()
    assert kernel.killed == [900]
    assert not (kernel.root / "podium/a").exists()
    assert (kernel.root / "podium").is_dir()
    assert not cg.exists()
    cg.remove()  # already gone is fine
