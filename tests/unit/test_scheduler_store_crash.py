"""An acknowledged write survives `kill -9`: a child process writes to a
store and prints each write as soon as the store returns it; the test kills
the child by its PID mid-stream, reopens the file and finds every printed
write there, at the revision printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proto.podium.v1 import cluster_pb2
from scheduler.objects import Key, meta
from scheduler.store import EventType, SqliteStore

REPO = Path(__file__).resolve().parents[2]
# Fewer writes than the history keeps, so every one can be checked in it.
LIMIT = 3000


def _pod(name: str, image: str) -> cluster_pb2.Object:
    obj = cluster_pb2.Object()
    obj.pod.metadata.name = name
    obj.pod.metadata.namespace = "default"
    obj.pod.spec.containers.add(name="c", image=image)
    return obj


def write_until_killed(path: str) -> None:
    """The child: creates pods, and updates every other one, printing
    `name resource_version image` for each acknowledged write."""
    store = SqliteStore(path)
    for i in range(LIMIT):
        writes = [store.create(_pod(f"p{i}", f"v{i}"))]
        if i % 2:
            writes.append(store.update(_pod(f"p{i // 2}", f"u{i}")))
        for obj in writes:
            print(meta(obj).name, meta(obj).resource_version,
                  obj.pod.spec.containers[0].image, flush=True)
    store.close()


def _run_and_kill(path: Path, after_lines: int) -> list[tuple[str, int, str]]:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from tests.unit.test_scheduler_store_crash import write_until_killed\n"
         "write_until_killed(sys.argv[1])\n",
         str(path)],
        cwd=REPO, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout is not None
    try:
        lines = [child.stdout.readline() for _ in range(after_lines)]
        assert child.poll() is None, "the child finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # What the child printed before it died was acknowledged too.
        lines += child.stdout.read().splitlines(keepends=True)
    finally:
        if child.returncode is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    acked = []
    for line in lines:
        if line.endswith(b"\n"):  # a line cut by the kill was never whole
            name, version, image = line.decode().split()
            acked.append((name, int(version), image))
    return acked


@pytest.mark.parametrize("after_lines", [1, 200, 1500])
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, after_lines: int) -> None:
    path = tmp_path / "store.db"
    acked = _run_and_kill(path, after_lines)
    assert len(acked) >= after_lines
    last: dict[str, tuple[int, str]] = {}
    for name, version, image in acked:
        last[name] = (version, image)

    with SqliteStore(path) as store:
        newest = max(version for version, _ in last.values())
        assert store.revision >= newest
        for name, (version, image) in last.items():
            stored = store.get(Key("Pod", "default", name))
            # A write may have committed after the last line was printed.
            assert int(meta(stored).resource_version) >= version, name
            if int(meta(stored).resource_version) == version:
                assert stored.pod.spec.containers[0].image == image
        # Each acknowledged write is in history, at its revision, as written
        # (all but revision 1: a watch replays the changes after a revision).
        watch = store.watch(from_revision=1)
        by_revision = {}
        while (change := watch.next(0)) is not None:
            by_revision[change.revision] = change
        watch.close()
        for name, version, image in acked:
            if version == 1:
                continue
            change = by_revision[version]
            assert change.type in (EventType.ADDED, EventType.MODIFIED)
            assert meta(change.object).name == name
            assert meta(change.object).resource_version == str(version)
            assert change.object.pod.spec.containers[0].image == image
        # The store goes on from where it was.
        revision = store.revision
        assert meta(store.create(_pod("after", "x"))).resource_version == str(revision + 1)
    with SqliteStore(path) as store:
        assert store.revision == revision + 1

