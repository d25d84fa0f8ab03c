"""The v1 driver against a temporary directory that plays cgroupfs (no root needed)."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from runtime.cgroups import CgroupFs, CgroupV1Driver, CgroupV2Driver, detect
from runtime.cgroups.v1 import find_hierarchies
from runtime.errors import CgroupError
from runtime.spec.model import Cpu, DeviceRule, Memory, Pids, Resources

UNLIMITED = "9223372036854771712"

# What the kernel puts in a new cgroup directory, per controller.
DEFAULTS: dict[str, dict[str, str]] = {
    "cpu": {
        "cpu.shares": "1024",
        "cpu.cfs_quota_us": "-1",
        "cpu.cfs_period_us": "100000",
        "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
    },
    "cpuacct": {
        "cpuacct.usage": "0",
        "cpuacct.usage_user": "0",
        "cpuacct.usage_sys": "0",
        "cpuacct.stat": "user 0\nsystem 0\n",
    },
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {
        "memory.limit_in_bytes": UNLIMITED,
        "memory.memsw.limit_in_bytes": UNLIMITED,
        "memory.soft_limit_in_bytes": UNLIMITED,
        "memory.usage_in_bytes": "0",
        "memory.max_usage_in_bytes": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
    "freezer": {"freezer.state": "THAWED"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "name=systemd": {},
}


class FakeV1Kernel(CgroupFs):
    """cgroupfs v1 over a temporary directory: mkdir populates, writes are recorded."""

    def __init__(self, root: Path, mounts: Mapping[str, tuple[str, ...]],
                 memsw: bool = True) -> None:
        self.root = root
        self.memsw = memsw
        self.writes: list[tuple[str, str]] = []
        self.killed: list[int] = []
        self.refuse: dict[str, int] = {}  # file name -> errno its writes fail with
        self.busy_rmdirs = 0  # how many rmdirs fail with EBUSY first
        self.stuck_freezing = False
        self.controllers: dict[str, tuple[str, ...]] = {}
        for dirname, controllers in mounts.items():
            (root / dirname).mkdir()
            self.controllers[dirname] = controllers
            self._populate(root / dirname, controllers)
            if "cpuset" in controllers:
                (root / dirname / "cpuset.cpus").write_text("0-3\n")
                (root / dirname / "cpuset.mems").write_text("0\n")
            (root / dirname / "freezer.state").unlink(missing_ok=True)  # none at the root

    def _populate(self, d: Path, controllers: tuple[str, ...]) -> None:
        (d / "cgroup.procs").write_text("")
        (d / "tasks").write_text("")
        for c in controllers:
            for name, value in DEFAULTS[c].items():
                if name.startswith("memory.memsw") and not self.memsw:
                    continue
                (d / name).write_text(value)

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        top = path.relative_to(self.root).parts[0]
        self._populate(path, self.controllers[top])

    def rmdir(self, path: Path) -> None:
        if self.busy_rmdirs:
            self.busy_rmdirs -= 1
            raise OSError(errno.EBUSY, "Device or resource busy")
        for f in path.iterdir():
            f.unlink()  # the kernel's files go with the directory
        super().rmdir(path)

    def write(self, path: Path, value: str) -> None:
        if path.name in self.refuse:
            raise OSError(self.refuse[path.name], os.strerror(self.refuse[path.name]))
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        self.writes.append((str(path.relative_to(self.root)), value))
        if path.name == "cgroup.procs":  # joining adds to the list
            value = path.read_text() + value + "\n"
        if path.name == "freezer.state" and value == "FROZEN" and self.stuck_freezing:
            value = "FREEZING"
        path.write_text(value)

    def kill(self, pid: int) -> None:
        self.killed.append(pid)
        for procs in self.root.rglob("cgroup.procs"):
            pids = [p for p in procs.read_text().split() if p != str(pid)]
            procs.write_text("".join(p + "\n" for p in pids))


SEPARATE = {
    "cpu": ("cpu",),
    "cpuacct": ("cpuacct",),
    "cpuset": ("cpuset",),
    "memory": ("memory",),
    "pids": ("pids",),
    "freezer": ("freezer",),
    "devices": ("devices",),
    "systemd": ("name=systemd",),
}


@pytest.fixture
def kernel(tmp_path: Path) -> FakeV1Kernel:
    return FakeV1Kernel(tmp_path, SEPARATE)


@pytest.fixture
def driver(kernel: FakeV1Kernel) -> CgroupV1Driver:
    return CgroupV1Driver(kernel.root, fs=kernel, mountinfo=Path("/nonexistent"), timeout=0.3)


def written(kernel: FakeV1Kernel, controller_dir: str) -> list[tuple[str, str]]:
    prefix = controller_dir + "/"
    return [(f.removeprefix(prefix), v) for f, v in kernel.writes if f.startswith(prefix)]


# --- finding the hierarchies and the version ---


def test_hierarchies_from_separate_directories(driver: CgroupV1Driver, tmp_path: Path) -> None:
    assert driver.hierarchies == {
        "cpu": tmp_path / "cpu",
        "cpuacct": tmp_path / "cpuacct",
        "cpuset": tmp_path / "cpuset",
        "memory": tmp_path / "memory",
        "pids": tmp_path / "pids",
        "freezer": tmp_path / "freezer",
        "devices": tmp_path / "devices",
        "name=systemd": tmp_path / "systemd",
    }


def test_comounted_cpu_cpuacct_with_symlinks_is_one_hierarchy(tmp_path: Path) -> None:
    kernel = FakeV1Kernel(tmp_path, {"cpu,cpuacct": ("cpu", "cpuacct"), "memory": ("memory",)})
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    (tmp_path / "cpuacct").symlink_to("cpu,cpuacct")
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    found = find_hierarchies(tmp_path, Path("/nonexistent"))
    assert found == {
        "cpu": tmp_path / "cpu,cpuacct",
        "cpuacct": tmp_path / "cpu,cpuacct",
        "memory": tmp_path / "memory",
    }
    driver = CgroupV1Driver(tmp_path, fs=kernel, mountinfo=Path("/nonexistent"))
    cg = driver.cgroup("podium/a")
    cg.create()
    cg.apply(Resources(cpu=Cpu(shares=512)))
    cg.add(42)
    assert kernel.writes == [
        ("cpu,cpuacct/podium/a/cpu.shares", "512"),
        ("cpu,cpuacct/podium/a/cgroup.procs", "42"),
        ("memory/podium/a/cgroup.procs", "42"),
    ]


def test_hierarchies_from_mountinfo(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"31 23 0:28 / {tmp_path} rw,relatime - tmpfs tmpfs rw,mode=755\n"
        f"32 31 0:29 / {tmp_path}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        f"35 31 0:32 / {tmp_path}/memory rw - cgroup cgroup rw,memory\n"
        f"40 31 0:37 / {tmp_path}/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        f"41 31 0:38 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n"
        "50 23 0:40 / /elsewhere/pids rw - cgroup cgroup rw,pids\n"
    )
    assert find_hierarchies(tmp_path, mountinfo) == {
        "cpu": tmp_path / "cpu,cpuacct",
        "cpuacct": tmp_path / "cpu,cpuacct",
        "memory": tmp_path / "memory",
        "name=systemd": tmp_path / "systemd",
    }
    assert detect(tmp_path, mountinfo=mountinfo).version == 1


def test_detect_v1_from_layout(kernel: FakeV1Kernel) -> None:
    d = detect(kernel.root, mountinfo=Path("/nonexistent"))
    assert isinstance(d, CgroupV1Driver)
    assert d.version == 1


def test_detect_v2_when_root_is_a_cgroup2_mount(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"31 23 0:28 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    d = detect(tmp_path, mountinfo=mountinfo)
    assert isinstance(d, CgroupV2Driver)
    assert d.version == 2


def test_no_hierarchy_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="no cgroup v1 hierarchy"):
        CgroupV1Driver(tmp_path, mountinfo=Path("/nonexistent"))


@pytest.mark.parametrize("bad", ["", "/", "a/../b", "./x"])
def test_path_needs_plain_names(driver: CgroupV1Driver, bad: str) -> None:
    with pytest.raises(CgroupError):
        driver.cgroup(bad)


# --- create ---


def test_create_makes_every_level_in_every_hierarchy(
    driver: CgroupV1Driver, kernel: FakeV1Kernel
) -> None:
    cg = driver.cgroup("podium/pod1/c1")
    cg.create()
    for top in SEPARATE:
        assert (kernel.root / top / "podium/pod1/c1").is_dir(), top
    assert cg.exists()
    # Each new cpuset level gets its parent's cpus and mems, top down.
    assert kernel.writes == [
        ("cpuset/podium/cpuset.cpus", "0-3"),
        ("cpuset/podium/cpuset.mems", "0"),
        ("cpuset/podium/pod1/cpuset.cpus", "0-3"),
        ("cpuset/podium/pod1/cpuset.mems", "0"),
        ("cpuset/podium/pod1/c1/cpuset.cpus", "0-3"),
        ("cpuset/podium/pod1/c1/cpuset.mems", "0"),
    ]
    kernel.writes.clear()
    cg.create()  # existing is fine, and a filled cpuset is left alone
    assert kernel.writes == []


def test_create_fills_a_parent_another_start_made_but_has_not_filled_yet(
    driver: CgroupV1Driver, kernel: FakeV1Kernel
) -> None:
    # Two pods start at once: the other made podium/ a moment ago, its cpuset still
    # empty; copying that emptiness down would leave this container unable to join.
    kernel.mkdir(kernel.root / "cpuset" / "podium")
    driver.cgroup("podium/pod2/c1").create()
    assert kernel.writes == [
        ("cpuset/podium/cpuset.cpus", "0-3"),
        ("cpuset/podium/cpuset.mems", "0"),
        ("cpuset/podium/pod2/cpuset.cpus", "0-3"),
        ("cpuset/podium/pod2/cpuset.mems", "0"),
        ("cpuset/podium/pod2/c1/cpuset.cpus", "0-3"),
        ("cpuset/podium/pod2/c1/cpuset.mems", "0"),
    ]


# --- apply ---


def test_memory_limit_swap_and_reservation(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    cg.apply(Resources(memory=Memory(limit=256 << 20, swap=512 << 20, reservation=128 << 20)))
    # memsw shrinks from unlimited, so the limit goes first.
    assert kernel.writes == [
        ("memory/podium/a/memory.limit_in_bytes", str(256 << 20)),
        ("memory/podium/a/memory.memsw.limit_in_bytes", str(512 << 20)),
        ("memory/podium/a/memory.soft_limit_in_bytes", str(128 << 20)),
    ]
    kernel.writes.clear()
    cg.apply(Resources(memory=Memory(limit=1 << 30, swap=2 << 30)))
    # Growing: memsw first, so memsw >= limit holds after each write.
    assert kernel.writes == [
        ("memory/podium/a/memory.memsw.limit_in_bytes", str(2 << 30)),
        ("memory/podium/a/memory.limit_in_bytes", str(1 << 30)),
    ]


def test_unlimited_memory_lifts_memsw_first(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    cg.apply(Resources(memory=Memory(limit=1 << 20, swap=1 << 20)))
    kernel.writes.clear()
    cg.apply(Resources(memory=Memory(limit=-1)))
    assert kernel.writes == [
        ("memory/podium/a/memory.memsw.limit_in_bytes", "-1"),
        ("memory/podium/a/memory.limit_in_bytes", "-1"),
    ]


def test_swap_without_swap_accounting(tmp_path: Path) -> None:
    kernel = FakeV1Kernel(tmp_path, {"memory": ("memory",)}, memsw=False)
    cg = CgroupV1Driver(tmp_path, fs=kernel, mountinfo=Path("/nonexistent")).cgroup("p/a")
    cg.create()
    cg.apply(Resources(memory=Memory(limit=1 << 20, swap=1 << 20)))  # "no swap": fine
    assert kernel.writes == [("memory/p/a/memory.limit_in_bytes", str(1 << 20))]
    kernel.writes.clear()
    with pytest.raises(CgroupError, match=r"memory\.memsw\.limit_in_bytes.*swap accounting"):
        cg.apply(Resources(memory=Memory(limit=1 << 20, swap=2 << 20)))
    assert kernel.writes == []


def test_cpu_shares_period_quota(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    cg.apply(Resources(cpu=Cpu(shares=512, quota=50000, period=100000, cpus="1-2", mems="0")))
    assert kernel.writes == [
        ("cpu/podium/a/cpu.shares", "512"),
        ("cpu/podium/a/cpu.cfs_period_us", "100000"),
        ("cpu/podium/a/cpu.cfs_quota_us", "50000"),
        ("cpuset/podium/a/cpuset.cpus", "1-2"),
        ("cpuset/podium/a/cpuset.mems", "0"),
    ]
    kernel.writes.clear()
    cg.apply(Resources(cpu=Cpu(quota=-1)))
    assert kernel.writes == [("cpu/podium/a/cpu.cfs_quota_us", "-1")]


def test_refused_period_is_retried_after_the_quota(
    driver: CgroupV1Driver, kernel: FakeV1Kernel
) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    kernel.refuse["cpu.cfs_period_us"] = errno.EINVAL
    with pytest.raises(CgroupError, match=r"cpu\.cfs_period_us: cannot write '1000'"):
        cg.apply(Resources(cpu=Cpu(quota=500, period=1000)))
    assert kernel.writes == [("cpu/podium/a/cpu.cfs_quota_us", "500")]


@pytest.mark.parametrize("limit,value", [(100, "100"), (-1, "max"), (0, "max")])
def test_pids_limit(driver: CgroupV1Driver, kernel: FakeV1Kernel, limit: int, value: str) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    cg.apply(Resources(pids=Pids(limit=limit)))
    assert kernel.writes == [("pids/podium/a/pids.max", value)]


def test_devices_deny_all_then_rules_in_order(
    driver: CgroupV1Driver, kernel: FakeV1Kernel
) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    cg.apply(Resources(devices=(
        DeviceRule(allow=False),
        DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),
        DeviceRule(allow=True, type="c", major=136, minor=None, access="rw"),
        DeviceRule(allow=False, type="b", major=8, minor=0, access="m"),
    )))
    assert written(kernel, "devices") == [
        ("podium/a/devices.deny", "a"),  # the rule list's own deny-all is the reset
        ("podium/a/devices.allow", "c 1:3 rwm"),
        ("podium/a/devices.allow", "c 136:* rw"),
        ("podium/a/devices.deny", "b 8:0 m"),
    ]


@pytest.mark.parametrize("rule", [DeviceRule(allow=True, type="p"),
                                  DeviceRule(allow=True, access="rx")])
def test_bad_device_rule_writes_nothing(
    driver: CgroupV1Driver, kernel: FakeV1Kernel, rule: DeviceRule
) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    with pytest.raises(CgroupError):
        cg.apply(Resources(devices=(rule,)))
    assert kernel.writes == []


def test_limit_for_an_unmounted_controller_is_an_error(tmp_path: Path) -> None:
    kernel = FakeV1Kernel(tmp_path, {"cpu": ("cpu",), "pids": ("pids",)})
    cg = CgroupV1Driver(tmp_path, fs=kernel, mountinfo=Path("/nonexistent")).cgroup("p/a")
    cg.create()
    with pytest.raises(CgroupError, match="memory limit needs the v1 memory controller"):
        cg.apply(Resources(memory=Memory(limit=1 << 20), pids=Pids(limit=5)))
    assert kernel.writes == []  # nothing half applied
    with pytest.raises(CgroupError, match="freezer"):
        cg.freeze()


def test_write_error_names_file_and_value(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.refuse["memory.limit_in_bytes"] = errno.EBUSY
    with pytest.raises(CgroupError) as info:
        cg.apply(Resources(memory=Memory(limit=4096)))
    assert info.value.path == str(kernel.root / "memory/podium/a/memory.limit_in_bytes")
    assert "cannot write '4096'" in str(info.value)
    assert "busy" in str(info.value)


def test_write_before_create_names_the_missing_file(driver: CgroupV1Driver) -> None:
    with pytest.raises(CgroupError, match=r"pids\.max: cannot write 'max': no such file"):
        driver.cgroup("podium/never").apply(Resources(pids=Pids(limit=-1)))


# --- processes ---


def test_add_joins_every_hierarchy_and_procs_reads_below(
    driver: CgroupV1Driver, kernel: FakeV1Kernel
) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    cg.add(1234)
    assert kernel.writes == [(f"{top}/podium/a/cgroup.procs", "1234") for top in sorted(SEPARATE)]
    child = driver.cgroup("podium/a/sub")
    child.create()
    child.add(99)
    assert cg.procs() == [99, 1234]
    assert child.procs() == [99]


def test_stats(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    d = kernel.root
    (d / "cpuacct/podium/a/cpuacct.usage").write_text("5000000\n")
    (d / "cpuacct/podium/a/cpuacct.usage_user").write_text("3000000\n")
    (d / "cpuacct/podium/a/cpuacct.usage_sys").write_text("2000000\n")
    (d / "cpu/podium/a/cpu.stat").write_text("nr_periods 10\nnr_throttled 4\nthrottled_time 777\n")
    (d / "memory/podium/a/memory.usage_in_bytes").write_text("1048576\n")
    (d / "memory/podium/a/memory.max_usage_in_bytes").write_text("2097152\n")
    (d / "memory/podium/a/memory.limit_in_bytes").write_text("4194304\n")
    (d / "memory/podium/a/memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (d / "pids/podium/a/pids.current").write_text("7\n")
    (d / "pids/podium/a/pids.max").write_text("64\n")
    s = cg.stats()
    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) == (5000000, 3000000, 2000000)
    assert (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns) == (10, 4, 777)
    assert (s.memory_current, s.memory_peak, s.memory_limit) == (1048576, 2097152, 4194304)
    assert s.oom_kills == 3
    assert (s.pids_current, s.pids_limit) == (7, 64)


def test_stats_unlimited_and_old_cpuacct(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    acct = kernel.root / "cpuacct/podium/a"
    (acct / "cpuacct.usage_user").unlink()
    (acct / "cpuacct.usage_sys").unlink()
    (acct / "cpuacct.stat").write_text("user 3\nsystem 2\n")
    s = cg.stats()
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert (s.cpu_user_ns, s.cpu_system_ns) == (3 * tick, 2 * tick)
    assert s.memory_limit is None
    assert s.pids_limit is None


# --- freeze, kill, remove ---


def test_freeze_thaw(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.writes.clear()
    assert not cg.is_frozen()
    cg.freeze()
    assert cg.is_frozen()
    cg.thaw()
    assert not cg.is_frozen()
    assert kernel.writes == [
        ("freezer/podium/a/freezer.state", "FROZEN"),
        ("freezer/podium/a/freezer.state", "THAWED"),
    ]


def test_freeze_that_never_completes_thaws_and_fails(
    driver: CgroupV1Driver, kernel: FakeV1Kernel
) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.stuck_freezing = True
    with pytest.raises(CgroupError, match="still FREEZING"):
        cg.freeze()
    assert kernel.writes[-1] == ("freezer/podium/a/freezer.state", "THAWED")
    assert len(kernel.writes) >= 2  # FROZEN written again while waiting


def test_kill_freezes_signals_thaws(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    cg.add(1001)
    driver.cgroup("podium/a/sub").create()
    driver.cgroup("podium/a/sub").add(1002)
    kernel.writes.clear()
    cg.kill()
    assert sorted(kernel.killed) == [1001, 1002]
    assert cg.procs() == []
    assert written(kernel, "freezer") == [
        ("podium/a/freezer.state", "FROZEN"),
        ("podium/a/freezer.state", "THAWED"),
    ]


def test_kill_gives_up_on_processes_that_stay(
    driver: CgroupV1Driver, kernel: FakeV1Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    cg.add(1001)
    monkeypatch.setattr(kernel, "kill", lambda pid: None)  # an unkillable process
    with pytest.raises(CgroupError, match=r"\[1001\] still alive"):
        cg.kill()


def test_remove_kills_then_removes_bottom_up(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    driver.cgroup("podium/a/sub").create()
    cg.add(1001)
    kernel.busy_rmdirs = 2  # EBUSY is retried
    cg.remove()
    assert kernel.killed == [1001]
    assert not cg.exists()
    for top in SEPARATE:
        assert not (kernel.root / top / "podium/a").exists()
        assert (kernel.root / top / "podium").is_dir()  # the shared parent stays
    cg.remove()  # already gone is fine


def test_remove_gives_up_on_lasting_ebusy(driver: CgroupV1Driver, kernel: FakeV1Kernel) -> None:
    cg = driver.cgroup("podium/a")
    cg.create()
    kernel.busy_rmdirs = 10**6
    with pytest.raises(CgroupError, match="cannot remove: Device or resource busy"):
        cg.remove()
