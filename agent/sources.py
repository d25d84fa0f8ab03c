"""Where the agent's pods come from: pod sources behind one small interface.

A source reports changes as ``PodEvent``s (ADD, UPDATE, REMOVE, and ERROR for
input it could not use); the agent's loop calls ``poll()`` and hands the pods
to its workers. Two sources: ``StaticManifestSource`` (a directory of Pod
manifests, like the kubelet's static pods) here, and the scheduler's WatchPods
stream (``agent.link.SchedulerPodSource``); ``CombinedSource`` polls several.

Static pods: each ``*.yaml``, ``*.yml`` or ``*.json`` file (hidden files are
skipped, so editors' swap files are too) holds one or more Pod documents.
A file added starts its pods, a change updates them, removing the file stops
them. A file that does not parse, or holds anything but Pods, yields one
ERROR event per content and leaves the file's previous pods as they were:
no half-made pod, other files untouched. Each pod's UID is derived from the
file's path and the pod's namespace/name, so an agent that restarts finds the
same pods again.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from agent.watch import DirectoryWatch
from proto import kube
from proto.podium.v1 import pod_pb2

log = logging.getLogger("podium.agent")

__all__ = [
    "MANIFEST_SUFFIXES",
    "CombinedSource",
    "PodEvent",
    "PodEventType",
    "PodSource",
    "StaticManifestSource",
    "static_pod_uid",
]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# Fixed namespace for static pods' name-based UUIDs: changing it changes every
# static pod's UID, and a restarted agent would no longer recognise its pods.
_STATIC_UID_NAMESPACE = uuid.UUID("5c0d4f1e-8f3a-4b6e-9a57-0d1b2c3e4f50")
# A file modified this recently may change again within the filesystem's
# timestamp granularity without its stat changing, so it is re-read (and
# re-hashed) until a read comes this long after its modification: at every scan
# without inotify; with it, when an event names the file and once the time is up.
_RACY_SECONDS = 2.0


class PodEventType(enum.Enum):
    ADD = "ADD"
    UPDATE = "UPDATE"
    REMOVE = "REMOVE"
    ERROR = "ERROR"


class PodEvent(NamedTuple):
    type: PodEventType
    # The pod as wanted now (for REMOVE: as last known); None for ERROR.
    pod: pod_pb2.Pod | None
    # Where it came from, e.g. the manifest file.
    source: str
    # For ERROR: what is wrong, one line naming file, document and field.
    message: str = ""
    # Fields the pod's manifest uses that podium ignores.
    warnings: tuple[str, ...] = ()


class PodSource(Protocol):
    """Something that tells the agent which pods to run."""

    def poll(self) -> list[PodEvent]:
        """The changes since the last call, in order; [] when nothing changed."""
        ...


class CombinedSource:
    """Several sources as one: each polled in turn, their events in that order.

    A source that raises is logged and skipped, so the others' events are not lost."""

    def __init__(self, *sources: PodSource) -> None:
        self.sources = sources

    def poll(self) -> list[PodEvent]:
        events: list[PodEvent] = []
        for source in self.sources:
            try:
                events.extend(source.poll())
            except Exception as e:  # noqa: BLE001 - one broken source must not hide the rest
                log.error("pod source %s: %s", type(source).__name__, e)
        return events


def static_pod_uid(path: str, namespace: str, name: str) -> str:
    return str(uuid.uuid5(_STATIC_UID_NAMESPACE, f"{path}\n{namespace}/{name}"))


PodKey = tuple[str, str]  # (namespace, name)


class _Pod(NamedTuple):
    pod: pod_pb2.Pod
    warnings: tuple[str, ...]


@dataclass
class _File:
    stat: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) when last read
    racy: bool = False  # last read too soon after its modification to trust ``stat``
    digest: str = ""
    pods: dict[PodKey, _Pod] = field(default_factory=dict)
    error: str = ""  # the last ERROR reported, so it is reported once


class StaticManifestSource:
    """Pods from a directory of manifests, found by polling (stat, then hash).

    ``poll()`` scans at most once per ``poll_interval`` seconds of ``clock``
    (a monotonic clock; tests pass a fake), and at once when the directory changed
    if ``watch`` (inotify: ``fileno()`` is readable then, for the agent's loop to
    wait on). ``scan()`` scans now.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        watch: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.poll_interval = poll_interval
        self._clock = clock
        self._next_scan: float | None = None
        self._files: dict[str, _File] = {}
        self._paths: dict[str, str] = {}  # name in the directory -> its path
        self._missing_reported = False
        self._watching = watch
        self._watch: DirectoryWatch | None = None
        self._watched_ino = 0  # the directory's inode when the watch was added

    def poll(self) -> list[PodEvent]:
        now = self._clock()
        named: set[str] | None = None
        changed = False
        if self._watch is not None:
            named = self._watch.changes()
            changed = named is None or bool(named)
        if not changed and self._next_scan is not None and now < self._next_scan:
            return []
        self._next_scan = now + self.poll_interval
        return self._scan(named)

    def fileno(self) -> int | None:
        """The inotify descriptor, readable when the directory changed; None without."""
        return None if self._watch is None else self._watch.fileno()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _start_watching(self) -> None:
        """Watch the directory once it exists (a watch is dropped with its directory:
        inotify reports that as a change, and the scan that follows finds out)."""
        if self._watch is not None and self._watch_alive():
            return
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        try:
            self._watch = DirectoryWatch(self.directory)
            self._watched_ino = os.stat(self.directory).st_ino
        except OSError:
            pass  # polled as before; tried again at the next scan

    def _watch_alive(self) -> bool:
        try:
            return os.stat(self.directory).st_ino == self._watched_ino
        except OSError:
            return False

    def pods(self) -> list[pod_pb2.Pod]:
        """Every pod the directory currently asks for."""
        return [p.pod for state in self._files.values() for p in state.pods.values()]

    def scan(self) -> list[PodEvent]:
        return self._scan(None)

    def _scan(self, named: set[str] | None) -> list[PodEvent]:
        """``named``: the entries inotify saw change since the last scan (None: not
        known), whose stat may not show it."""
        if self._watching:
            watch = self._watch
            self._start_watching()
            if self._watch is not watch:  # a new watch saw nothing before it began
                named = None
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as err:
            # A directory that vanished (an unmount, a typo) is reported, not
            # read as "remove every static pod".
            if self._missing_reported:
                return []
            self._missing_reported = True
            message = f"static pod directory {self.directory}: {err.strerror or err}"
            return [PodEvent(PodEventType.ERROR, None, str(self.directory), message)]
        self._missing_reported = False
        # Each name's path made once (a path per name per scan was most of a scan).
        known = self._paths
        self._paths = {
            name: known.get(name) or str(self.directory / name)
            for name in names
            if not name.startswith(".") and name.endswith(MANIFEST_SUFFIXES)
        }
        present = self._paths
        events: list[PodEvent] = []
        for path in sorted(set(self._files) - set(present.values())):
            gone = self._files.pop(path)
            events.extend(PodEvent(PodEventType.REMOVE, p.pod, path) for p in gone.pods.values())
        for name, path in present.items():
            events.extend(self._scan_file(path, named is None or name in named))
        return events

    def _scan_file(self, path: str, named: bool) -> list[PodEvent]:
        state = self._files.setdefault(path, _File())
        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            # A file in error is re-read on every scan: a conflict with
            # another file can clear without this file changing.
            if state.stat == key and not state.error and not self._reread(state, st, named):
                return []
            data = Path(path).read_bytes()
        except FileNotFoundError:  # removed between listdir and stat: next scan
            return []
        except OSError as err:
            return self._failed(path, state, f"{path}: cannot read: {err.strerror or err}")
        state.stat = key
        state.racy = time.time_ns() - st.st_mtime_ns < _RACY_SECONDS * 1e9
        digest = hashlib.sha256(data).hexdigest()
        if digest == state.digest and not state.error:
            return []
        state.digest = digest
        try:
            wanted = self._parse(path, data)
        except kube.ManifestError as err:
            return self._failed(path, state, str(err))
        state.error = ""
        return self._diff(path, state, wanted)

    @staticmethod
    def _reread(state: _File, st: os.stat_result, named: bool) -> bool:
        """Whether a file whose stat is as last read may have changed all the same."""
        if not state.racy:
            return False
        # inotify names a file written since the last scan. What it cannot see (a
        # write through a symlink or another hard link) the read once the racy
        # window is over catches.
        return named or time.time_ns() - st.st_mtime_ns >= _RACY_SECONDS * 1e9

    def _parse(self, path: str, data: bytes) -> dict[PodKey, _Pod]:
        name = os.path.basename(path)
        try:
            text = data.decode()
        except UnicodeDecodeError as err:
            raise kube.ManifestError(f"{name}: not UTF-8 text ({err.reason})") from None
        pods: dict[PodKey, _Pod] = {}
        for doc in kube.load_documents(text, name):
            converted = kube.to_object(doc)
            where = f"{name}, document {doc.number}"
            if converted.kind != "Pod":
                raise kube.ManifestError(
                    f"{where}: kind {converted.kind}: a static manifest holds Pods only"
                )
            pod = converted.object.pod
            meta = pod.metadata
            if not meta.name:
                raise kube.ManifestError(f"{where}: metadata.name is missing")
            meta.namespace = meta.namespace or "default"
            key = (meta.namespace, meta.name)
            if key in pods:
                raise kube.ManifestError(f"{where}: pod {key[0]}/{key[1]} is defined twice")
            for other, state in self._files.items():
                if other != path and key in state.pods:
                    raise kube.ManifestError(
                        f"{where}: pod {key[0]}/{key[1]} is already defined in {other}"
                    )
            meta.uid = static_pod_uid(path, meta.namespace, meta.name)
            pods[key] = _Pod(pod, converted.warnings)
        return pods

    def _diff(self, path: str, state: _File, wanted: dict[PodKey, _Pod]) -> list[PodEvent]:
        events = [
            PodEvent(PodEventType.REMOVE, old.pod, path)
            for key, old in state.pods.items()
            if key not in wanted
        ]
        for key, new in wanted.items():
            old = state.pods.get(key)
            if old is None:
                events.append(PodEvent(PodEventType.ADD, new.pod, path, warnings=new.warnings))
            elif old.pod != new.pod:
                events.append(PodEvent(PodEventType.UPDATE, new.pod, path, warnings=new.warnings))
        state.pods = wanted
        return events

    def _failed(self, path: str, state: _File, message: str) -> list[PodEvent]:
        if message == state.error:
            return []
        state.error = message
        return [PodEvent(PodEventType.ERROR, None, path, message)]
