"""Container state on disk and the state machine every lifecycle verb goes through.

    creating ──> created ──> running <──> paused
        │           │           │           │
        └───────────┴───────────┴───────────┴──> stopped

Each container has a directory ``<root>/<id>/`` holding ``state.json`` (the OCI
state plus what podium needs to find the container again), ``exec.fifo`` while
it is created but not started, and ``exit.json`` once a monitor saw it end.
Files are written to a temporary name and renamed, so a reader never sees half a file.

The recorded status is refined against the kernel on every read: a container
whose init has died is stopped whatever the file says.
"""

# No ``from __future__ import annotations``: typing.NamedTuple compiles each string
# annotation, a cost every podium-runtime command would pay on import.
import json
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Self

from runtime.errors import (
    ContainerExistsError,
    ContainerNotFound,
    IllegalTransition,
    InvalidIDError,
)

MAX_ID_LENGTH = 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Status(StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATING: frozenset({Status.CREATED, Status.STOPPED}),
    Status.CREATED: frozenset({Status.RUNNING, Status.STOPPED}),
    Status.RUNNING: frozenset({Status.PAUSED, Status.STOPPED}),
    Status.PAUSED: frozenset({Status.RUNNING, Status.STOPPED}),
    Status.STOPPED: frozenset(),
}

# What each verb needs the container to be, for error messages that say why.
_VERB_TARGET = {"start": Status.RUNNING, "pause": Status.PAUSED, "resume": Status.RUNNING}


def check_transition(container_id: str, current: Status, target: Status, verb: str) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(
            f"container {container_id} is {current.value}: cannot {verb} it"
        )


def check_id(container_id: str) -> None:
    """IDs become directory and cgroup names: plain names only."""
    if not container_id:
        raise InvalidIDError("container ID must not be empty")
    if len(container_id) > MAX_ID_LENGTH:
        raise InvalidIDError(f"container ID is {len(container_id)} characters, "
                             f"the limit is {MAX_ID_LENGTH}")
    if not _ID.match(container_id) or container_id in (".", ".."):
        raise InvalidIDError(f"container ID {container_id!r} is invalid: use letters, digits "
                             "and _ . + - (no '/', no '..', not starting with a symbol)")


def pid_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None if
    it is gone or a zombie. Compared with the recorded value, it tells a live
    container init from an unrelated process that reused the PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class State(NamedTuple):
    id: str
    status: Status
    bundle: str
    oci_version: str
    pid: int = 0
    pid_start: int = 0
    created: str = ""  # RFC 3339
    cgroup_path: str = ""
    rootfs: str = ""
    annotations: Mapping[str, str] = MappingProxyType({})

    def oci(self) -> dict[str, Any]:
        """The state as the OCI runtime spec defines it (what `state` prints)."""
        out: dict[str, Any] = {
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": self.status.value,
            "bundle": self.bundle,
        }
        if self.status is not Status.STOPPED:
            out["pid"] = self.pid
        else:
            out["pid"] = 0
        out["rootfs"] = self.rootfs
        out["created"] = self.created
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> str:
        data = self._asdict()
        data["status"] = self.status.value
        data["annotations"] = dict(self.annotations)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Self:
        data = json.loads(text)
        data["status"] = Status(data["status"])
        return cls(**data)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


STATE_FILE = "state.json"  # in each container's directory


class StateStore:
    """The runtime root: one directory per container."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dir(self, container_id: str) -> Path:
        check_id(container_id)
        return self.root / container_id

    def fifo(self, container_id: str) -> Path:
        return self.dir(container_id) / "exec.fifo"

    def _file(self, container_id: str) -> Path:
        return self.dir(container_id) / STATE_FILE

    def exists(self, container_id: str) -> bool:
        """Whether a state is recorded for the ID: one stat, without reading it."""
        return self._file(container_id).exists()

    def reserve(self, container_id: str) -> Path:
        """Claim an ID: mkdir is atomic, so two creates of one ID cannot both win."""
        path = self.dir(container_id)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            path.mkdir(mode=0o711)
        except FileExistsError:
            raise ContainerExistsError(f"container {container_id} already exists") from None
        return path

    def save(self, state: State) -> None:
        write_atomic(self._file(state.id), state.to_json())

    def load_recorded(self, container_id: str) -> State:
        try:
            text = self._file(container_id).read_text()
        except FileNotFoundError:
            raise ContainerNotFound(f"container {container_id} does not exist") from None
        return State.from_json(text)

    def load(self, container_id: str, frozen: bool | None = None) -> State:
        """The recorded state, refined against the kernel (see the module docstring).

        ``frozen`` says whether the container's cgroup is frozen, when the caller knows.
        """
        state = self.load_recorded(container_id)
        return state._replace(status=self._observed(state, frozen))

    def _observed(self, state: State, frozen: bool | None) -> Status:
        if state.status is Status.STOPPED:
            return Status.STOPPED
        if state.pid == 0:
            return state.status  # still creating
        if pid_start_time(state.pid) != state.pid_start:
            return Status.STOPPED
        if self.fifo(state.id).exists():
            return Status.CREATED
        if frozen:
            return Status.PAUSED
        return Status.RUNNING

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and (p / STATE_FILE).exists())

    def remove(self, container_id: str) -> None:
        _remove_tree(self.dir(container_id))


def _remove_tree(path: Path) -> None:
    """shutil.rmtree for a state directory (a few files), without importing shutil:
    podium-runtime pays for every module it imports on every command."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(Path(entry.path))
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
