"""The seams a pod worker works through, each with a real implementation
(``agent.pods.host``) and a fake in the unit tests.

    Sandbox           the pod's network: ``agent.network.PodNetwork`` is one
    NamespaceHolder   the pod's IPC and UTS namespaces: ``PodNetwork`` again
    ContainerStarter  start / watch / signal / remove containers: the runtime's shims
    ImageSource       an image's layers and config, and who holds it
    VolumeHost        make and remove the pod's emptyDirs (tmpfs for medium Memory)
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from agent.network.podfiles import PodDns
from agent.pods.spec import ImageFacts, VolumeSource
from runtime.spec.model import ContainerConfig, User


class SandboxInfo(Protocol):
    """What ``Sandbox.setup`` returns (``agent.network.Sandbox`` is one)."""

    @property
    def netns(self) -> Path: ...
    @property
    def files(self) -> Path: ...
    @property
    def ip(self) -> IPv4Address: ...


class Sandbox(Protocol):
    def setup(self, pod_uid: str, pod_name: str, dns: PodDns) -> SandboxInfo:
        """The pod's network; ``dns`` (``agent.network.podfiles.pod_dns``) decides
        its resolv.conf."""
        ...

    def host_network_files(self, pod_uid: str, dns: PodDns) -> Path:
        """A hostNetwork pod's hosts, hostname and resolv.conf; returns their directory."""
        ...

    def teardown(self, pod_uid: str) -> None: ...


class HeldNamespaces(Protocol):
    """What ``NamespaceHolder`` returns (``agent.network.PodNamespaces`` is one)."""

    @property
    def ipc(self) -> Path | None: ...
    @property
    def uts(self) -> Path | None: ...


@runtime_checkable
class NamespaceHolder(Protocol):
    """Pod-wide IPC and UTS namespaces, bound to files for the containers to join."""

    def hold_namespaces(self, pod_uid: str, hostname: str | None,
                        ipc: bool = True) -> HeldNamespaces:
        """Make what is missing: IPC if ``ipc``, UTS with ``hostname`` if one is given."""
        ...

    def pod_namespaces(self, pod_uid: str) -> HeldNamespaces: ...
    def release_namespaces(self, pod_uid: str) -> None: ...


class ExitInfo(NamedTuple):
    """How a container's process ended, as its shim recorded it."""

    exit_code: int
    signal: int | None = None
    oom_killed: bool = False
    started_at: str = ""  # RFC 3339
    finished_at: str = ""


class ContainerStarter(Protocol):
    def start(self, container_id: str, config: ContainerConfig, log_path: Path) -> int:
        """Create and start the container under its monitor; returns the init's PID."""
        ...

    def exit_info(self, container_id: str) -> ExitInfo | None:
        """None while the container runs."""
        ...

    def signal(self, container_id: str, sig: int, all_processes: bool = False) -> None: ...

    def remove(self, container_id: str) -> None:
        """Delete the container (killing what is left of it); no error if it is gone."""
        ...

    def remove_cgroup(self, path: str) -> None:
        """Remove an (empty) cgroup the containers were grouped under, if it exists."""
        ...


class ImageSource(Protocol):
    def facts(self, image: str) -> ImageFacts: ...
    def lookup_user(self, facts: ImageFacts, user: str) -> User: ...
    def hold(self, image: str, holder: str) -> str:
        """Record that ``holder`` uses ``image``; returns its id (``sha256:…``)."""
        ...

    def release(self, holder: str) -> None: ...


class VolumeHost(Protocol):
    def prepare(self, volume: VolumeSource) -> None: ...
    def cleanup(self, volume: VolumeSource) -> None: ...
