"""Fixtures shared by every test room (unit, integration).

- ``need(condition, why)``: skip a test that cannot run here, or fail it when
  ``PODIUM_REQUIRE_ALL=1`` (as CI sets), so nothing is silently left out.
- Every integration test is checked for leaks (mounts, cgroups, network devices,
  nftables tables, processes) by an autouse fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.api import Runtime
from runtime.processes import reap_children
from tests.support.busybox import make_rootfs
from tests.support.leaks import Snapshot, session_cgroup_parent

REQUIRE_ALL = os.environ.get("PODIUM_REQUIRE_ALL") == "1"
# Per test session, so two sessions on one machine never see each other's mounts.
TMP_MARKER = f"podium-test-{os.getpid()}-"


def need(condition: bool, why: str) -> None:
    """Skip (or, under PODIUM_REQUIRE_ALL=1, fail) unless ``condition`` holds."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"PODIUM_REQUIRE_ALL=1 and this test cannot run: {why}")
    pytest.skip(why)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


def pytest_configure(config: pytest.Config) -> None:
    # Containers whose caller exits are re-parented to the nearest subreaper: make
    # that the test process, so they stay visible to the leak check and are reaped.
    if os.geteuid() == 0:
        import prctl

        prctl.set_child_subreaper(1)




@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A temporary directory whose name marks it as a podium test's."""
    path = Path(tempfile.mkdtemp(prefix=TMP_MARKER))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if "integration" not in str(request.node.fspath) or os.geteuid() != 0:
        yield
        return
    markers = (TMP_MARKER, session_cgroup_parent())
    before = Snapshot.take(markers)
    yield
    deadline = time.monotonic() + 3.0
    while True:
        reap_children()
        problems = Snapshot.take(markers).leaked_since(before)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if problems:
        _kill_leaked(before)
        pytest.fail("test leaked: " + "; ".join(problems))


def _kill_leaked(before: Snapshot) -> None:
    """After a failed leak check, end what the test left (by PID) so later tests run clean."""
    now = Snapshot.take(())
    for pid, _ in now.processes - before.processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.1)
    reap_children()


@pytest.fixture(scope="session")
def busybox_rootfs() -> Iterator[Path]:
    """A busybox root filesystem shared by the session's tests (use it read-only)."""
    need(shutil.which("busybox") is not None or Path("/bin/busybox").exists(),
         "needs busybox-static")
    path = Path(tempfile.mkdtemp(prefix=TMP_MARKER + "rootfs-"))
    make_rootfs(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cgroup_parent() -> str:
    return session_cgroup_parent()


@pytest.fixture
def rt(tmp_dir: Path, cgroup_parent: str) -> Iterator[Runtime]:
    """A runtime whose state and cgroups belong to this test; what is left is deleted."""
    need_root()
    runtime = Runtime(root=tmp_dir / "state", cgroup_parent=cgroup_parent)
    yield runtime
    for state in runtime.containers():
        runtime.delete(state.id, force=True)


@pytest.fixture(scope="session", autouse=True)
def _remove_session_cgroup_parent() -> Iterator[None]:
    yield
    root = Path("/sys/fs/cgroup")
    if not root.exists():
        return
    for hierarchy in [root, *root.iterdir()]:  # v2's root, v1's hierarchies
        parent = hierarchy / session_cgroup_parent()
        if parent.is_dir():
            try:
                parent.rmdir()
            except OSError:
                pass  # not empty: the leak check has already said so
