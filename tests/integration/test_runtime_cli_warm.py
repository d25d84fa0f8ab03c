"""The CLI's cgroup warmer on the real kernel: it moves this process into the cgroup
it is already in, again and again, changes nothing, and stops cleanly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runtime.cli.warm import CgroupWarmer
from tests.conftest import need_root

pytestmark = pytest.mark.root


def test_the_warmer_moves_this_process_where_it_is_until_stopped() -> None:
    need_root()
    before = Path("/proc/self/cgroup").read_text()
    warmer = CgroupWarmer.start()
    assert warmer is not None
    deadline = time.monotonic() + 10
    while warmer.moves < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    fd = warmer._fd
    warmer.stop()
    warmer.stop()  # idempotent
    moves = warmer.moves
    assert moves >= 3  # the kernel took the writes
    assert Path("/proc/self/cgroup").read_text() == before
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    time.sleep(0.05)
    assert warmer.moves == moves  # and no more


def test_no_writable_cgroup_means_no_warmer(tmp_path: Path) -> None:
    assert CgroupWarmer.start(root=str(tmp_path)) is None
