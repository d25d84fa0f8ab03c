"""The cgroup drivers on the real kernel (root): limits read back, processes moved,
frozen, forks refused, a memory hog OOM-killed, everything killed and removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.cgroups import CgroupV1Driver, CgroupV2Driver, cgroup_version, detect
from runtime.cgroups.v1 import CgroupV1
from runtime.cgroups.v2 import CgroupV2
from runtime.errors import CgroupError
from runtime.spec.model import Cpu, DeviceRule, Memory, Pids, Resources
from tests.conftest import need, need_root

ROOT = Path("/sys/fs/cgroup")
MiB = 1 << 20

# A child that waits for a line on stdin before doing its part, so the test can move
# it into the cgroup first (memory and forks are charged where the process is).
FORKER = """
import os, sys, time
sys.stdin.readline()
kids, failed = [], 0
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except BlockingIOError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print(len(kids), failed, flush=True)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""
HOG = """
import sys
sys.stdin.readline()
chunks = []
while True:
    chunks.append(b"x" * (1 << 20))  # written, so every page is really charged
"""
TICKER = """
import sys, time
while True:
    print("t", flush=True)
    time.sleep(0.01)
"""
# Forks as fast as it can, ignoring refusals: kill() must still empty the cgroup.
# It too waits for "go", so no child is forked before it is in the cgroup.
SPAWNER = """
import os, sys, time
sys.stdin.readline()
while True:
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
    except OSError:
        time.sleep(0.001)
"""


def v1_hierarchies() -> dict[str, Path]:
    return {} if cgroup_version(ROOT) == 2 else CgroupV1Driver(ROOT).hierarchies


def v2_root() -> Path | None:
    if cgroup_version(ROOT) == 2:
        return ROOT
    unified = ROOT / "unified"
    return unified if (unified / "cgroup.procs").exists() else None


def python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def end(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Kill (by PID) and reap, if it is still there."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()


def ticks_during(proc: subprocess.Popen[str], seconds: float) -> int:
    """How many lines the ticker prints in ``seconds`` (after draining what it had)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)

    def drain() -> int:
        n = 0
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return n
            if not data:
                return n
            n += data.count(b"\n")

    drain()
    time.sleep(seconds)
    return drain()


def read(path: Path) -> str:
    return path.read_text().strip()


@pytest.fixture(scope="module", autouse=True)
def _drop_parent(cgroup_parent: str) -> Iterator[None]:
    # On a pure v2 host the session parent sits at the root of /sys/fs/cgroup, where
    # the shared clean-up does not look; leave no empty parent behind in any hierarchy.
    yield
    roots = set(v1_hierarchies().values())
    if (r := v2_root()) is not None:
        roots.add(r)
    for root in roots:
        try:
            (root / cgroup_parent).rmdir()
        except OSError:
            pass


@pytest.fixture
def v1(cgroup_parent: str) -> Iterator[tuple[CgroupV1Driver, CgroupV1]]:
    need_root()
    need(bool(v1_hierarchies()), "no cgroup v1 hierarchy is mounted (a pure cgroup v2 host)")
    driver = CgroupV1Driver(ROOT)
    cg = driver.cgroup(f"{cgroup_parent}/v1-{uuid.uuid4().hex[:8]}")
    cg.create()
    try:
        yield driver, cg
    finally:
        cg.remove()


@pytest.fixture
def v2(cgroup_parent: str) -> Iterator[tuple[CgroupV2Driver, CgroupV2]]:
    need_root()
    root = v2_root()
    need(root is not None, "no cgroup v2 hierarchy is mounted")
    assert root is not None
    driver = CgroupV2Driver(root)
    cg = driver.cgroup(f"{cgroup_parent}/v2-{uuid.uuid4().hex[:8]}")
    cg.create()
    try:
        yield driver, cg
    finally:
        cg.remove()


def test_detect_matches_the_mount_table() -> None:
    with open("/proc/self/mountinfo") as f:
        fstype = next((line.split(" - ")[1].split()[0] for line in f
                       if line.split()[4] == str(ROOT)), None)
    need(fstype is not None, f"{ROOT} is not a mount point")
    d = detect()
    assert d.version == (2 if fstype == "cgroup2" else 1)


# --- v1 ---


def test_v1_limits_read_back(v1: tuple[CgroupV1Driver, CgroupV1]) -> None:
    driver, cg = v1
    h = driver.hierarchies
    need("memory" in h and "cpu" in h and "pids" in h and "cpuset" in h,
         "memory, cpu, cpuset and pids v1 controllers")
    cpus = read(h["cpuset"] / cg.path / "cpuset.cpus")
    assert cpus, "create() copies the parent's cpus into a new cpuset"
    cg.apply(Resources(
        memory=Memory(limit=64 * MiB, swap=64 * MiB, reservation=32 * MiB),
        cpu=Cpu(shares=512, quota=50000, period=100000, cpus=cpus.split(",")[0].split("-")[0]),
        pids=Pids(limit=10),
    ))
    mem = h["memory"] / cg.path
    assert read(mem / "memory.limit_in_bytes") == str(64 * MiB)
    assert read(mem / "memory.soft_limit_in_bytes") == str(32 * MiB)
    if (mem / "memory.memsw.limit_in_bytes").exists():
        assert read(mem / "memory.memsw.limit_in_bytes") == str(64 * MiB)
    assert read(h["cpu"] / cg.path / "cpu.shares") == "512"
    assert read(h["cpu"] / cg.path / "cpu.cfs_quota_us") == "50000"
    assert read(h["cpu"] / cg.path / "cpu.cfs_period_us") == "100000"
    assert read(h["pids"] / cg.path / "pids.max") == "10"
    s = cg.stats()
    assert (s.memory_limit, s.pids_limit) == (64 * MiB, 10)
    cg.apply(Resources(pids=Pids(limit=-1), memory=Memory(limit=-1)))
    assert read(h["pids"] / cg.path / "pids.max") == "max"
    assert cg.stats().memory_limit is None


def test_v1_devices(v1: tuple[CgroupV1Driver, CgroupV1]) -> None:
    driver, cg = v1
    need("devices" in driver.hierarchies, "the v1 devices controller")
    cg.apply(Resources(devices=(
        DeviceRule(allow=False),
        DeviceRule(allow=True, type="c", major=1, minor=3, access="rwm"),
        DeviceRule(allow=True, type="c", major=136, access="rw"),
    )))
    listed = read(driver.hierarchies["devices"] / cg.path / "devices.list").splitlines()
    assert set(listed) == {"c 1:3 rwm", "c 136:* rw"}


def test_v1_process_stats_freeze_kill(v1: tuple[CgroupV1Driver, CgroupV1]) -> None:
    driver, cg = v1
    need("freezer" in driver.hierarchies, "the v1 freezer controller")
    sleeper = subprocess.Popen(["sleep", "300"])
    ticker = python(TICKER)
    try:
        cg.add(sleeper.pid)
        cg.add(ticker.pid)
        assert cg.procs() == sorted([sleeper.pid, ticker.pid])
        for root in set(driver.hierarchies.values()):
            assert str(sleeper.pid) in read(root / cg.path / "cgroup.procs").split()
        s = cg.stats()
        if "pids" in driver.hierarchies:
            assert s.pids_current == 2
        assert ticks_during(ticker, 0.2) > 0

        cg.freeze()
        assert cg.is_frozen()
        assert read(driver.hierarchies["freezer"] / cg.path / "freezer.state") == "FROZEN"
        assert ticks_during(ticker, 0.3) == 0  # really stopped
        cg.thaw()
        assert not cg.is_frozen()
        assert ticks_during(ticker, 0.3) > 0

        cg.kill()
        assert cg.procs() == []
        assert sleeper.wait(timeout=5) == -9
        assert ticker.wait(timeout=5) == -9
    finally:
        end(sleeper)
        end(ticker)
    cg.remove()
    assert not cg.exists()
    for root in set(driver.hierarchies.values()):
        assert not (root / cg.path).exists()


def test_v1_pids_limit_refuses_forks(v1: tuple[CgroupV1Driver, CgroupV1]) -> None:
    driver, cg = v1
    need("pids" in driver.hierarchies, "the v1 pids controller")
    cg.apply(Resources(pids=Pids(limit=3)))
    forker = python(FORKER, "5")
    try:
        cg.add(forker.pid)
        go(forker)
        out, _ = forker.communicate(timeout=30)
        assert out.split() == ["2", "3"]  # itself and two children fill pids.max=3
        assert forker.returncode == 0
    finally:
        end(forker)


def test_v1_memory_hog_is_oom_killed(v1: tuple[CgroupV1Driver, CgroupV1]) -> None:
    driver, cg = v1
    need("memory" in driver.hierarchies, "the v1 memory controller")
    memsw = (driver.hierarchies["memory"] / "memory.memsw.limit_in_bytes").exists()
    need(memsw or not Path("/proc/swaps").read_text().splitlines()[1:],
         "swap is on without swap accounting: the hog would swap instead of dying")
    cg.apply(Resources(memory=Memory(limit=32 * MiB, swap=32 * MiB)))
    hog = python(HOG)
    try:
        cg.add(hog.pid)
        go(hog)
        assert hog.wait(timeout=60) == -9
    finally:
        end(hog)
    s = cg.stats()
    assert s.oom_kills >= 1
    assert s.memory_peak >= 16 * MiB


def test_v1_kill_catches_a_forking_process(v1: tuple[CgroupV1Driver, CgroupV1]) -> None:
    driver, cg = v1
    need("pids" in driver.hierarchies, "the v1 pids controller")
    cg.apply(Resources(pids=Pids(limit=30)))
    spawner = python(SPAWNER)
    try:
        cg.add(spawner.pid)
        go(spawner)
        assert _wait(lambda: len(cg.procs()) > 5)
        cg.kill()
        assert cg.procs() == []
        assert spawner.wait(timeout=5) == -9
    finally:
        end(spawner)
    cg.remove()
    assert not cg.exists()


def test_v1_remove_kills_what_is_left(v1: tuple[CgroupV1Driver, CgroupV1]) -> None:
    driver, cg = v1
    child = driver.cgroup(f"{cg.path}/inner")
    child.create()
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        child.add(sleeper.pid)
        cg.remove()
        assert sleeper.wait(timeout=5) == -9
    finally:
        end(sleeper)
    assert not cg.exists() and not child.exists()


# --- v2 ---


def test_v2_process_freeze_kill_remove(v2: tuple[CgroupV2Driver, CgroupV2]) -> None:
    driver, cg = v2
    d = driver.root / cg.path
    assert cg.exists()
    sleeper = subprocess.Popen(["sleep", "300"])
    ticker = python(TICKER)
    try:
        cg.add(sleeper.pid)
        cg.add(ticker.pid)
        assert cg.procs() == sorted([sleeper.pid, ticker.pid])
        assert "populated 1" in read(d / "cgroup.events")
        assert cg.stats().cpu_usage_ns >= 0

        cg.freeze()
        assert cg.is_frozen()
        assert "frozen 1" in read(d / "cgroup.events").splitlines()
        assert ticks_during(ticker, 0.3) == 0
        cg.thaw()
        assert not cg.is_frozen()
        assert "frozen 0" in read(d / "cgroup.events").splitlines()
        assert ticks_during(ticker, 0.3) > 0

        need((d / "cgroup.kill").exists(), "cgroup.kill (Linux 5.14+)")
        cg.kill()
        assert cg.procs() == []
        assert sleeper.wait(timeout=5) == -9
        assert ticker.wait(timeout=5) == -9
    finally:
        end(sleeper)
        end(ticker)
    cg.remove()
    assert not d.exists()


def test_v2_kill_catches_a_forking_process(v2: tuple[CgroupV2Driver, CgroupV2]) -> None:
    driver, cg = v2
    spawner = python(SPAWNER)
    try:
        cg.add(spawner.pid)
        go(spawner)
        assert _wait(lambda: len(cg.procs()) > 5)
        cg.kill()
        assert cg.procs() == []
        assert spawner.wait(timeout=5) == -9
    finally:
        end(spawner)


def test_v2_limits_where_offered(v2: tuple[CgroupV2Driver, CgroupV2]) -> None:
    driver, cg = v2
    d = driver.root / cg.path
    offered = read(d / "cgroup.controllers").split()
    resources = Resources(memory=Memory(limit=64 * MiB), cpu=Cpu(shares=1024, quota=50000,
                          period=100000), pids=Pids(limit=10))
    if not {"memory", "cpu", "pids"} <= set(offered):
        # A hybrid host's unified hierarchy (hugetlb only): refused, never ignored.
        with pytest.raises(CgroupError, match="controller"):
            cg.apply(resources)
        return
    cg.apply(resources)
    assert read(d / "memory.max") == str(64 * MiB)
    assert read(d / "cpu.weight") == "39"
    assert read(d / "cpu.max") == "50000 100000"
    assert read(d / "pids.max") == "10"
    s = cg.stats()
    assert (s.memory_limit, s.pids_limit) == (64 * MiB, 10)


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False
