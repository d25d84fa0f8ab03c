"""What a pod worker remembers of each container: its runs, restarts and waiting reason.

A container (app or init) is a ``ContainerSlot``; each time it starts it gets a new
``ContainerRun`` with the runtime ID ``<uid>.<name>.<n>`` (n counts every start, so
a run's rootfs and log are never reused). These are plain records: the worker
changes them, ``agent.pods.status`` reads them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agent.pods.images import ImageFetch
from agent.pods.interfaces import ExitInfo
from agent.pods.probes import ProbeSet
from runtime.spec.model import Process


@dataclass
class ContainerRun:
    """One run of a container: what started, and how it ended."""

    container_id: str
    attempt: int
    started: float  # clock
    started_at: datetime
    exit: ExitInfo | None = None
    finished_at: datetime | None = None
    probes: ProbeSet | None = None
    process: Process | None = None  # exec probes run as this (user, env, cwd)
    probe_failure: str = ""  # why a probe had it killed, for lastState's message
    kill_at: float | None = None  # clock: SIGKILL then, if the SIGTERM did not end it
    assumed: bool = False  # an init container's run taken as done after an agent restart

    @property
    def succeeded(self) -> bool:
        return self.exit is not None and self.exit.exit_code == 0 and not self.probe_failure


@dataclass
class ContainerSlot:
    name: str
    index: int  # in spec.containers, or in spec.initContainers when ``init``
    init: bool = False
    run: ContainerRun | None = None  # the current (or last, when done) run
    last: ContainerRun | None = None  # the run before it, for lastState
    attempts: int = 0
    restarts: int = 0
    done: bool = False  # exited and restartPolicy says stay down (init: completed)
    waiting_reason: str = ""  # "": the default (ContainerCreating, or PodInitializing)
    waiting_message: str = ""
    image_id: str = ""
    image: ImageFetch = field(default_factory=ImageFetch)

    @property
    def where(self) -> str:
        """The spec field path of this container, for messages."""
        return f"spec.{'initContainers' if self.init else 'containers'}[{self.index}]"

    @property
    def running(self) -> bool:
        return self.run is not None and self.run.exit is None

    @property
    def completed(self) -> bool:
        """An init container that ran to success: the next one may start."""
        return self.done and self.run is not None and self.run.succeeded


def parse_container_id(uid: str, container_id: str) -> tuple[str, int] | None:
    """``<uid>.<name>.<n>`` → (name, n); None for an ID the worker did not make."""
    prefix, _, rest = container_id.partition(".")
    name, _, attempt = rest.rpartition(".")
    if prefix != uid or not name or not attempt.isdigit():
        return None
    return name, int(attempt)


def newest_runs(uid: str, container_ids: Iterable[str], names: Collection[str],
                ) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """A pod's containers in the runtime → each name's newest run ``(n, id)``, and the
    IDs to remove: older runs, and names the pod does not have."""
    newest: dict[str, tuple[int, str]] = {}
    stale: list[str] = []
    for container_id in container_ids:
        parsed = parse_container_id(uid, container_id)
        if parsed is None or parsed[0] not in names:
            stale.append(container_id)
            continue
        name, attempt = parsed
        if name in newest:
            stale.append(newest[name][1] if newest[name][0] < attempt else container_id)
        if name not in newest or newest[name][0] < attempt:
            newest[name] = (attempt, container_id)
    return newest, stale
