"""``WorkerDeps``: everything a pod worker touches outside itself, in one record.

The agent makes one and hands it to every worker, so what they share (the image
puller above all: one pull per image however many pods want it) is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent.events import LogRecorder, Recorder
from agent.pods.hostports import HostPorts
from agent.pods.images import ImagePuller, ImagePulls
from agent.pods.interfaces import (
    ContainerStarter,
    ImageSource,
    NamespaceHolder,
    Sandbox,
    VolumeHost,
)
from agent.pods.probing import ContainerExec


@dataclass
class WorkerDeps:
    """Everything a worker touches outside itself.

    Defaults taken from the other seams when they offer them: ``exec_in_container``
    (exec probes) from the containers (``RuntimeContainers``), ``host_ports`` (the
    NAT table) and ``namespaces`` (pod-wide IPC and UTS) from the sandbox
    (``PodNetwork``), ``puller`` from an image source that can pull (``StoreImages``).
    Without them exec probes are unknown, a pod that asks for a hostPort cannot
    start, each container gets IPC and UTS namespaces of its own, and a missing image
    is not pulled.
    """

    sandbox: Sandbox
    containers: ContainerStarter
    images: ImageSource
    volumes: VolumeHost
    pods_dir: Path
    cgroup_parent: str
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    host_ip: str = ""
    exec_in_container: ContainerExec | None = None
    host_ports: HostPorts | None = None
    namespaces: NamespaceHolder | None = None
    puller: ImagePuller | None = None  # shared by every worker: one pull per image
    recorder: Recorder = field(default_factory=LogRecorder)  # the pods' events

    def __post_init__(self) -> None:
        if self.exec_in_container is None:
            self.exec_in_container = getattr(self.containers, "exec_in_container", None)
        if self.host_ports is None:
            self.host_ports = getattr(self.sandbox, "nat", None)
        if self.namespaces is None and isinstance(self.sandbox, NamespaceHolder):
            self.namespaces = self.sandbox
        if self.puller is None and isinstance(self.images, ImagePulls):
            self.puller = ImagePuller(self.images.pull)

    def image_present(self, image: str) -> bool:
        """Whether the store has ``image``; a source that cannot tell is taken to."""
        # Not isinstance(ImagePulls): a runtime-checkable Protocol's check is slow,
        # and this is asked at every container start.
        present: Callable[[str], bool] | None = getattr(self.images, "present", None)
        return True if present is None else present(image)
