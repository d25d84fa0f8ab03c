"""The real implementations of the pod worker's seams (``agent.pods.interfaces``).

    RuntimeContainers   containers through the runtime: shims from the fork server,
                        exits from the shims' records, kill and delete, and processes
                        exec'd into them (probes) through the fork server too
    StoreImages         the node's image store: layers, config, USER lookup, holders,
                        pulls from registries
    HostVolumes         emptyDir directories, tmpfs for medium Memory, hostPath checks

The sandbox's real implementation is ``agent.network.PodNetwork`` itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.pods.errors import PodError
from agent.pods.interfaces import ExitInfo
from agent.pods.spec import ImageFacts, VolumeSource
from runtime import syscalls as sc
from runtime.errors import ContainerNotFound
from runtime.spec.model import ContainerConfig, User

if TYPE_CHECKING:
    from runtime.api import Runtime
    from runtime.forkserver import ForkServer, ShimRequest
    from runtime.images import ImageStore
    from runtime.spec.model import Process
    from runtime.state import State

EMPTY_DIR_MODE = 0o777  # as the kubelet makes them: any container user may write


class RuntimeContainers:
    """Containers of one runtime root, each under its own shim.

    ``spawn`` is ``ForkServer.spawn_shim`` in the agent (it runs gRPC threads and must
    never fork itself); without it, shims are forked from this process, which is only
    safe while it runs a single thread (tests, tools). Exec probes go through the
    same fork server: ``forkserver``, or the one ``spawn`` belongs to.
    """

    def __init__(self, rt: Runtime, spawn: Callable[[ShimRequest], State] | None = None,
                 forkserver: ForkServer | None = None) -> None:
        self.rt = rt
        self.spawn = spawn
        if forkserver is None and spawn is not None:
            from runtime.forkserver import ForkServer

            owner = getattr(spawn, "__self__", None)
            forkserver = owner if isinstance(owner, ForkServer) else None
        self.forkserver = forkserver

    def start(self, container_id: str, config: ContainerConfig, log_path: Path) -> int:
        if self.spawn is not None:
            from runtime.forkserver import ShimRequest

            state = self.spawn(ShimRequest(self.rt.store.root, self.rt.cgroup_parent,
                                           container_id, config, log_path=log_path))
        else:
            from runtime.shim import spawn_shim

            state = spawn_shim(self.rt, container_id, config=config, log_path=log_path)
        return state.pid

    def exec_in_container(self, container_id: str, process: Process, timeout: float) -> int:
        """Run ``process`` in the container, at most ``timeout`` seconds (then killed:
        TimeoutError); its exit code."""
        if self.forkserver is not None:
            return self.forkserver.exec_and_wait(self.rt.store.root, self.rt.cgroup_parent,
                                                 container_id, process, timeout)
        # No fork server: fork here, which a single-threaded subreaper caller may do.
        from agent.pods.probe_runners import runtime_exec

        return runtime_exec(self.rt, container_id, process)(process.args, timeout)

    def exit_info(self, container_id: str) -> ExitInfo | None:
        from runtime.shim import exit_record

        record = exit_record(self.rt, container_id)
        if record is None:
            # Asked of every running container at every sync: whether its state is
            # still recorded is enough (a stat, not the state's read and checks).
            if not self.rt.store.exists(container_id):
                # Deleted behind the agent's back: it is gone, how is unknown.
                return ExitInfo(exit_code=137)
            return None
        code = record.get("exitCode")
        sig = record.get("signal")
        return ExitInfo(
            exit_code=code if isinstance(code, int) else 255,
            signal=sig if isinstance(sig, int) else None,
            oom_killed=record.get("oomKilled") is True,
            started_at=str(record.get("startedAt") or ""),
            finished_at=str(record.get("finishedAt") or ""),
        )

    def signal(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        self.rt.kill(container_id, sig, all_processes)

    def remove(self, container_id: str) -> None:
        try:
            self.rt.delete(container_id, force=True)
        except ContainerNotFound:
            pass

    def remove_cgroup(self, path: str) -> None:
        cgroup = self.rt.driver.cgroup(path)
        if cgroup.exists():
            cgroup.remove()


class StoreImages:
    """Images from the node's store. ``pull`` blocks (``agent.pods.images.ImagePuller``
    runs it on a thread of its own)."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        # By manifest digest: an image's content never changes. Each container start
        # would otherwise read and check the manifest and the config again.
        self._facts: dict[str, ImageFacts] = {}

    def facts(self, image: str) -> ImageFacts:
        digest = self.store.resolve(image)  # the name may point elsewhere by now
        known = self._facts.get(digest)
        # Its layers unpacked still: a prune may have removed them since, and a pull
        # of the same image brought back only the blobs (lower_dirs unpacks).
        if known is not None and all(os.path.isdir(d) for d in known.lower):
            return known
        config = self.store.image_config(digest)
        lower = self.store.lower_dirs(digest)
        facts = self._facts[digest] = ImageFacts(
            lower=tuple(lower),
            entrypoint=tuple(config.entrypoint) if config.entrypoint is not None else None,
            cmd=tuple(config.cmd) if config.cmd is not None else None,
            env=tuple(config.env),
            working_dir=config.working_dir,
            user=config.user,
        )
        return facts

    def present(self, image: str) -> bool:
        from runtime.images import ImageNotFound

        try:
            self.store.resolve(image)
        except ImageNotFound:
            return False
        return True

    def pull(self, image: str) -> str:
        """Pull ``image`` from its registry into the store; the name it is stored under."""
        from runtime.images import pull

        return pull(self.store, image)

    def lookup_user(self, facts: ImageFacts, user: str) -> User:
        # The image's merged /etc/passwd and /etc/group, read from its layers unmounted.
        from runtime.images.imageview import ImageView, parse_passwd_user

        try:
            uid, gid, extra = parse_passwd_user(ImageView(list(facts.lower)), user)
        except LookupError as e:
            raise PodError(f"image user {user!r}: {e}") from None
        return User(uid=uid, gid=gid, additional_gids=extra)

    def hold(self, image: str, holder: str) -> str:
        return self.store.mark_in_use(image, holder)

    def release(self, holder: str) -> None:
        self.store.release(holder)


class HostVolumes:
    def __init__(self, syscalls: sc.Syscalls | None = None) -> None:
        self.sys = syscalls or sc.LinuxSyscalls()

    def prepare(self, volume: VolumeSource) -> None:
        if volume.kind == "emptyDir":
            self._empty_dir(volume)
        else:
            self._host_path(volume)

    def cleanup(self, volume: VolumeSource) -> None:
        """Unmount a Memory emptyDir; the directories go with the pod's directory."""
        if volume.kind == "emptyDir" and volume.medium == "Memory" and os.path.ismount(
                volume.path):
            try:
                self.sys.umount2(str(volume.path), sc.MNT_DETACH)
            except OSError as e:
                raise PodError(f"volume {volume.name}: unmount {volume.path}: "
                               f"{e.strerror or e}") from None

    def _empty_dir(self, volume: VolumeSource) -> None:
        path = volume.path
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, EMPTY_DIR_MODE)
        if volume.medium != "Memory" or os.path.ismount(path):
            return
        data = "mode=1777" + (f",size={volume.size_limit}" if volume.size_limit else "")
        try:
            self.sys.mount("tmpfs", str(path), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, data)
        except OSError as e:
            raise PodError(f"volume {volume.name}: mount tmpfs on {path}: "
                           f"{e.strerror or e}") from None

    def _host_path(self, volume: VolumeSource) -> None:
        path, kind = volume.path, volume.host_path_type
        where = f"volume {volume.name}: hostPath {path}"
        if kind == "DirectoryOrCreate":
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.touch(mode=0o644)
        if not kind:
            return
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise PodError(f"{where}: does not exist (type {kind})") from None
        wanted = {
            "DirectoryOrCreate": stat.S_ISDIR, "Directory": stat.S_ISDIR,
            "FileOrCreate": stat.S_ISREG, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
            "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK,
        }[kind]
        if not wanted(mode):
            raise PodError(f"{where}: is not a {kind.removesuffix('OrCreate')}")
