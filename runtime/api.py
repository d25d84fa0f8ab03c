"""``Runtime``: the library face of podium's container runtime.

One object per runtime root; every verb of the OCI runtime command line is a
method here, and the ``podium-runtime`` CLI and the agent are both its callers.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from runtime import syscalls as sc
from runtime.cgroups import CgroupStats, detect
from runtime.cgroups.base import Cgroup, CgroupDriver
from runtime.create import CreateOptions, Stdio, create
from runtime.delete import delete
from runtime.errors import IllegalTransition
from runtime.hooks import warn_stderr
from runtime.kill import kill
from runtime.spec.convert import load_bundle
from runtime.spec.model import ContainerConfig, Process
from runtime.spec.validate import validate
from runtime.start import start
from runtime.state import State, StateStore, Status, check_transition

DEFAULT_ROOT = Path("/run/podium/runtime")
DEFAULT_CGROUP_PARENT = "podium"


class Runtime:
    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        cgroup_parent: str = DEFAULT_CGROUP_PARENT,
        cgroup_driver: CgroupDriver | None = None,
        syscalls: sc.Syscalls | None = None,
        systemd_cgroup: bool = False,
        warn: Callable[[str], None] = warn_stderr,
    ) -> None:
        """``warn`` hears what goes wrong without failing the verb: a poststart or
        poststop hook that fails, a config field the spec does not know."""
        self.store = StateStore(Path(root))
        self.warn = warn
        self.cgroup_parent = cgroup_parent
        self.systemd_cgroup = systemd_cgroup
        self._driver = cgroup_driver
        self.sys: sc.Syscalls = syscalls or sc.LinuxSyscalls()

    @property
    def driver(self) -> CgroupDriver:
        if self._driver is None:
            self._driver = detect()
        return self._driver

    def _cgroup(self, state: State) -> Cgroup:
        return self.driver.cgroup(state.cgroup_path)

    # -- lifecycle ---------------------------------------------------------------

    def create(
        self,
        container_id: str,
        config: ContainerConfig,
        *,
        bundle: Path | None = None,
        stdio: Stdio = (None, None, None),
        pid_file: Path | None = None,
        console_socket: Path | None = None,
    ) -> State:
        """Build the container and leave its init blocked before exec (see ``start``).
        With ``process.terminal``, the pty's master is sent to ``console_socket``."""
        validate(config)
        options = CreateOptions(stdio=stdio, pid_file=pid_file,
                                cgroup_parent=self.cgroup_parent, bundle=bundle,
                                systemd_cgroup=self.systemd_cgroup,
                                console_socket=console_socket)
        return create(self.store, self.driver, self.sys, container_id, config, options)

    def create_bundle(self, container_id: str, bundle: Path, *, stdio: Stdio = (None, None, None),
                      pid_file: Path | None = None,
                      console_socket: Path | None = None) -> State:
        """create from an OCI bundle; fields the spec does not know go to ``warn``."""
        self.store.dir(container_id)  # reject a bad ID before reading anything
        converted = load_bundle(bundle)
        for warning in converted.warnings:
            self.warn(warning)
        config = converted.config
        return self.create(container_id, config, bundle=bundle.resolve(), stdio=stdio,
                           pid_file=pid_file, console_socket=console_socket)

    def start(self, container_id: str) -> State:
        return start(self.store, container_id, self.warn)

    def run(self, container_id: str, config: ContainerConfig, *, bundle: Path | None = None,
            stdio: Stdio = (None, None, None)) -> State:
        """create + start."""
        self.create(container_id, config, bundle=bundle, stdio=stdio)
        try:
            return self.start(container_id)
        except BaseException:
            self.delete(container_id, force=True)
            raise

    def state(self, container_id: str) -> State:
        state = self.store.load(container_id)
        # Only a live container can be paused: ask its freezer then, not before.
        if state.status is Status.RUNNING and state.cgroup_path:
            cgroup = self._cgroup(state)
            if cgroup.is_frozen():
                return state._replace(status=Status.PAUSED)
        return state

    def containers(self) -> list[State]:
        states = []
        for container_id in self.store.ids():
            try:
                states.append(self.state(container_id))
            except Exception:  # noqa: BLE001 - one broken entry must not hide the rest
                continue
        return states

    def kill(self, container_id: str, sig: int = signal.SIGTERM, all_processes: bool = False
             ) -> None:
        state = self.state(container_id)
        kill(state, self._cgroup(state), sig, all_processes)

    def delete(self, container_id: str, force: bool = False) -> None:
        state = self.state(container_id)
        delete(self.store, state, self._cgroup(state), force, self.warn)

    def pause(self, container_id: str) -> State:
        state = self.state(container_id)
        check_transition(container_id, state.status, Status.PAUSED, "pause")
        self._cgroup(state).freeze()
        return state._replace(status=Status.PAUSED)

    def resume(self, container_id: str) -> State:
        state = self.state(container_id)
        if state.status is not Status.PAUSED:
            raise IllegalTransition(f"container {container_id} is {state.status.value}: "
                                    "cannot resume it (it is not paused)")
        self._cgroup(state).thaw()
        return state._replace(status=Status.RUNNING)

    # -- inspection --------------------------------------------------------------

    def ps(self, container_id: str) -> list[int]:
        state = self.state(container_id)
        return self._cgroup(state).procs() if state.status is not Status.STOPPED else []

    def stats(self, container_id: str) -> CgroupStats:
        return self._cgroup(self.state(container_id)).stats()

    def exec(self, container_id: str, process: Process, stdio: Stdio = (None, None, None),
             console_socket: Path | None = None) -> int:
        """Start ``process`` in the running container; returns its host PID. The
        caller should be a subreaper to collect its exit status. With
        ``process.terminal``, the pty's master is sent to ``console_socket``."""
        from runtime.exec import exec_process
        from runtime.seccomp import load_profile

        state = self.state(container_id)
        return exec_process(state, self._cgroup(state), process, stdio, self.sys,
                            console_socket, seccomp=load_profile(self.store.dir(container_id)))
