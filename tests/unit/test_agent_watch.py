"""agent.watch: the loop's waker and the manifest directory's inotify watch, and the
static source scanning at once when its directory changes."""

from __future__ import annotations

import select
import threading
import time
from pathlib import Path

import pytest

from agent.sources import PodEventType, StaticManifestSource
from agent.watch import DirectoryWatch, Waker

POD = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n"
       "spec:\n  containers:\n  - name: main\n    image: busybox\n")
LONG = 30.0  # a wait that only ends early if what is tested works


def test_a_wake_from_another_thread_ends_the_wait() -> None:
    waker = Waker()
    try:
        threading.Timer(0.05, waker.wake).start()
        began = time.monotonic()
        waker.wait(LONG)
        assert time.monotonic() - began < LONG / 2
        waker.wake()
        waker.wake()  # many wakes before a wait: one wait consumes them all
        waker.wait(LONG)
        began = time.monotonic()
        waker.wait(0.01)  # nothing pending now: it waits out its timeout
        assert time.monotonic() - began >= 0.01
    finally:
        waker.close()
    waker.wake()  # after close: harmless (a signal handler may still call it)


def test_a_readable_descriptor_ends_the_wait(tmp_path: Path) -> None:
    waker, watch = Waker(), DirectoryWatch(tmp_path)
    try:
        threading.Timer(0.05, (tmp_path / "a.yaml").write_text, args=("x",)).start()
        began = time.monotonic()
        waker.wait(LONG, [watch.fileno()])
        assert time.monotonic() - began < LONG / 2
        assert watch.changed()
    finally:
        waker.close()
        watch.close()


def test_the_watch_sees_entries_made_renamed_and_removed(tmp_path: Path) -> None:
    watch = DirectoryWatch(tmp_path)
    try:
        assert not watch.changed()
        for change in ((tmp_path / ".a.tmp").touch,
                       lambda: (tmp_path / ".a.tmp").rename(tmp_path / "a.yaml"),
                       (tmp_path / "a.yaml").unlink):
            change()
            assert select.select([watch], [], [], LONG)[0]
            assert watch.changed()
            assert not watch.changed()  # drained
    finally:
        watch.close()


def test_a_directory_that_does_not_exist_cannot_be_watched(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="inotify_add_watch"):
        DirectoryWatch(tmp_path / "missing")


def test_a_watching_source_scans_at_once_when_its_directory_changes(tmp_path: Path) -> None:
    now = [100.0]  # a clock that never moves: only the watch can cause a scan
    watching = StaticManifestSource(tmp_path, poll_interval=60, clock=lambda: now[0],
                                    watch=True)
    polling = StaticManifestSource(tmp_path, poll_interval=60, clock=lambda: now[0])
    try:
        assert watching.poll() == [] and polling.poll() == []
        assert watching.fileno() is not None and polling.fileno() is None
        (tmp_path / "web.yaml").write_text(POD.format(name="web"))
        assert select.select([watching.fileno()], [], [], LONG)[0]
        assert [(e.type, e.pod.metadata.name) for e in watching.poll()
                if e.pod is not None] == [(PodEventType.ADD, "web")]
        assert polling.poll() == []  # waits for its interval
        assert watching.poll() == []  # nothing new
        now[0] += 60
        assert [e.type for e in polling.poll()] == [PodEventType.ADD]
    finally:
        watching.close()


def test_a_watching_source_starts_watching_once_its_directory_exists(tmp_path: Path) -> None:
    directory = tmp_path / "manifests"
    source = StaticManifestSource(directory, poll_interval=0, watch=True)
    try:
        assert [e.type for e in source.poll()] == [PodEventType.ERROR]  # missing
        assert source.fileno() is None
        directory.mkdir()
        source.poll()
        assert source.fileno() is not None
        (directory / "web.yaml").write_text(POD.format(name="web"))
        assert select.select([source.fileno()], [], [], LONG)[0]
    finally:
        source.close()
