"""agent.watch: the loop's waker and the manifest directory's inotify watch, and the
static source scanning at once when its directory changes."""

from __future__ import annotations

import os
import select
import struct
import threading
import time
from pathlib import Path

import pytest

from agent import sources
from agent.sources import PodEvent, PodEventType, StaticManifestSource
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



def changed(watch: DirectoryWatch) -> bool:
    """Whether anything happened in the directory since the last look (drains it)."""
    names = watch.changes()
    return names is None or bool(names)

def test_a_readable_descriptor_ends_the_wait(tmp_path: Path) -> None:
    waker, watch = Waker(), DirectoryWatch(tmp_path)
    try:
        threading.Timer(0.05, (tmp_path / "a.yaml").write_text, args=("x",)).start()
        began = time.monotonic()
        waker.wait(LONG, [watch.fileno()])
        assert time.monotonic() - began < LONG / 2
        assert changed(watch)
    finally:
        waker.close()
        watch.close()


def test_the_watch_sees_entries_made_renamed_and_removed(tmp_path: Path) -> None:
    watch = DirectoryWatch(tmp_path)
    try:
        assert not changed(watch)
        for change in ((tmp_path / ".a.tmp").touch,
                       lambda: (tmp_path / ".a.tmp").rename(tmp_path / "a.yaml"),
                       (tmp_path / "a.yaml").unlink):
            change()
            assert select.select([watch], [], [], LONG)[0]
            assert changed(watch)
            assert not changed(watch)  # drained
    finally:
        watch.close()


def test_a_directory_that_does_not_exist_cannot_be_watched(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="inotify_add_watch"):
        DirectoryWatch(tmp_path / "missing")


def watching_and_polling(directory: Path, now: list[float]
                         ) -> tuple[StaticManifestSource, StaticManifestSource]:
    """Two sources of ``directory`` on the clock ``now[0]``, one with inotify, one
    without, both scanning every 60 s of that clock."""
    return (StaticManifestSource(directory, poll_interval=60, clock=lambda: now[0],
                                 watch=True),
            StaticManifestSource(directory, poll_interval=60, clock=lambda: now[0]))


def test_a_watching_source_scans_at_once_when_its_directory_changes(tmp_path: Path) -> None:
    now = [100.0]  # a clock that never moves: only the watch can cause a scan
    watching, polling = watching_and_polling(tmp_path, now)
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


def test_the_watch_names_the_entries_that_changed(tmp_path: Path) -> None:
    directory = tmp_path / "manifests"
    directory.mkdir()
    watch = DirectoryWatch(directory)
    try:
        assert watch.changes() == set()
        (directory / ".a.tmp").write_text("x")
        (directory / ".a.tmp").rename(directory / "a.yaml")
        (directory / "b.yaml").write_text("y")
        assert select.select([watch], [], [], LONG)[0]
        assert watch.changes() == {".a.tmp", "a.yaml", "b.yaml"}
        assert watch.changes() == set()  # drained
        for name in ("a.yaml", "b.yaml"):
            (directory / name).unlink()
        directory.rmdir()  # an event of the directory itself: which entries is unknown
        assert select.select([watch], [], [], LONG)[0]
        assert watch.changes() is None
    finally:
        watch.close()


def test_an_overflowed_queue_names_nothing() -> None:
    from agent.watch import IN_MODIFY, IN_Q_OVERFLOW, _event_names

    def event(mask: int, name: bytes) -> bytes:
        padded = name + b"\0" * (-len(name) % 16) if name else b""
        return struct.pack("iIII", 1, mask, 0, len(padded)) + padded

    assert _event_names(event(IN_MODIFY, b"a.yaml") + event(IN_MODIFY, b"bb.yaml"),
                        set()) == {"a.yaml", "bb.yaml"}
    assert _event_names(event(IN_MODIFY, b"a.yaml") + event(IN_Q_OVERFLOW, b""), set()) is None
    assert _event_names(event(IN_MODIFY, b"a.yaml"), None) is None


RACY_POD = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n"
            "spec:\n  containers:\n  - name: main\n    image: busybox:{tag}\n")


def rewrite_keeping_the_stat(path: Path, text: str) -> None:
    """Rewrite ``path`` in place as a second write within one timestamp tick would:
    the same inode, size and modification time."""
    before = os.stat(path)
    with open(path, "r+") as f:
        f.write(text)
        f.truncate()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)


def images(events: list[PodEvent]) -> list[tuple[PodEventType, str]]:
    return [(e.type, e.pod.spec.containers[0].image) for e in events if e.pod is not None]


def test_a_rewrite_within_one_timestamp_tick_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_RACY_SECONDS", 3600.0)  # every file written is racy
    now = [100.0]  # a clock that never moves: only the watch can cause a scan
    watching, polling = watching_and_polling(tmp_path, now)
    try:
        assert watching.poll() == [] and polling.poll() == []
        fd = watching.fileno()
        assert fd is not None
        (tmp_path / "web.yaml").write_text(RACY_POD.format(tag="1"))
        assert select.select([fd], [], [], LONG)[0]
        assert images(watching.poll()) == [(PodEventType.ADD, "busybox:1")]
        now[0] += 60
        assert images(polling.poll()) == [(PodEventType.ADD, "busybox:1")]
        assert watching.poll() == []  # nothing happened, nothing is read

        rewrite_keeping_the_stat(tmp_path / "web.yaml", RACY_POD.format(tag="2"))
        assert select.select([fd], [], [], LONG)[0]
        assert images(watching.poll()) == [(PodEventType.UPDATE, "busybox:2")]
        now[0] += 60
        assert images(polling.poll()) == [(PodEventType.UPDATE, "busybox:2")]
    finally:
        watching.close()


def test_a_rewrite_the_watch_cannot_see_is_read_when_the_racy_window_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_RACY_SECONDS", 3600.0)
    directory = tmp_path / "manifests"
    directory.mkdir()
    # Written through another hard link: inotify tells the other link's directory.
    elsewhere = tmp_path / "web.yaml"
    elsewhere.write_text(RACY_POD.format(tag="1"))
    os.link(elsewhere, directory / "web.yaml")
    source = StaticManifestSource(directory, poll_interval=0, watch=True)
    try:
        assert images(source.poll()) == [(PodEventType.ADD, "busybox:1")]
        rewrite_keeping_the_stat(elsewhere, RACY_POD.format(tag="2"))
        assert source.poll() == []  # neither the watch nor the stat shows it
        monkeypatch.setattr(sources, "_RACY_SECONDS", 0.0)  # the window is over
        assert images(source.poll()) == [(PodEventType.UPDATE, "busybox:2")]
        assert source.poll() == []  # and the file is trusted from now on
    finally:
        source.close()
