"""``create``: build everything of a container and leave its init blocked before exec.

The caller forks the two stages of ``runtime.init`` and waits on the set-up channel
until the init says ``ready`` (or fails). On any failure everything made so far —
the init process, the cgroup, the state directory — is removed again before the
error is raised: a failed create leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import NamedTuple

from runtime import channel, hooks
from runtime import syscalls as sc
from runtime.cgroups.base import Cgroup, CgroupDriver
from runtime.cgroups.devices import effective_rules
from runtime.errors import ConfigError, SetupError
from runtime.init import GO, PLACED, InitPlan, run_init, run_stage1
from runtime.processes import reap, signal_pid
from runtime.seccomp import save_profile
from runtime.security import linux_ops
from runtime.spec.model import ContainerConfig, IDMapping, Resources
from runtime.state import State, StateStore, Status, pid_start_time, write_atomic

Stdio = tuple[int | None, int | None, int | None]


class CreateOptions(NamedTuple):
    stdio: Stdio = (None, None, None)  # fds for the init's 0, 1, 2; None inherits the caller's
    pid_file: Path | None = None
    cgroup_parent: str = "podium"
    bundle: Path | None = None  # recorded in the state; the spec may be built in code
    systemd_cgroup: bool = False  # read cgroupsPath as slice:prefix:name
    console_socket: Path | None = None  # with process.terminal: where the pty's master goes


def cgroup_path_for(config: ContainerConfig, container_id: str, parent: str,
                    systemd: bool = False) -> str:
    if systemd and config.cgroups_path:
        return systemd_cgroup_path(config.cgroups_path)
    if config.cgroups_path:
        return config.cgroups_path.strip("/")
    return f"{parent.strip('/')}/{container_id}"


def systemd_cgroup_path(spec: str) -> str:
    """``slice:prefix:name`` (systemd's form, as runc's --systemd-cgroup takes it) as the
    cgroupfs path systemd would use: ``a-b.slice:podium:x`` -> ``a.slice/a-b.slice/podium-x.scope``.

    podium writes the cgroup files itself; it does not ask systemd to make a unit."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[2]:
        raise ConfigError("linux.cgroupsPath",
                          f"{spec!r} is not slice:prefix:name (as --systemd-cgroup needs)")
    slice_name, prefix, name = parts
    path = []
    if slice_name and slice_name != "-.slice":
        if not slice_name.endswith(".slice") or "/" in slice_name:
            raise ConfigError("linux.cgroupsPath", f"{slice_name!r} is not a slice name")
        words = slice_name[: -len(".slice")].split("-")
        path = ["-".join(words[: i + 1]) + ".slice" for i in range(len(words))]
    path.append(f"{prefix}-{name}.scope" if prefix else f"{name}.scope")
    return "/".join(path)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def create(
    store: StateStore,
    driver: CgroupDriver,
    sys: sc.Syscalls,
    container_id: str,
    config: ContainerConfig,
    options: CreateOptions,
) -> State:
    if config.namespace("mount") is None:
        raise ConfigError("linux.namespaces", "podium needs a mount namespace "
                                              "(it pivots into the container's root)")
    check_console(config.process.terminal, options.console_socket)
    state_dir = store.reserve(container_id)
    cgroup: Cgroup | None = None
    init_pid = 0
    try:
        fifo = state_dir / "exec.fifo"
        os.mkfifo(fifo)
        # Writable by the init whoever it runs as (a mapped root, a non-root user);
        # chmod because mkfifo's mode passes through the umask.
        os.chmod(fifo, 0o622)
        if config.seccomp is not None:  # exec gives its processes the same filter
            save_profile(state_dir, config.seccomp)
        cgroup = driver.cgroup(cgroup_path_for(config, container_id, options.cgroup_parent,
                                               options.systemd_cgroup))
        hooks.save(state_dir, config.hooks)
        # Loaded here, once per caller, rather than by every init after its fork (libc's
        # handle and the kernel's last capability: 0.4 ms a container).
        linux_ops()
        # Device rules always: the config's, then the standard devices, then its nodes.
        placement = Placement(cgroup, config.resources._replace(devices=effective_rules(
            config.resources.devices, config.devices)))
        init_pid = _fork_init(config, placement, state_dir, options.stdio, sys,
                              options.console_socket, creating=_creating(container_id, config,
                                                                         options))
        state = State(
            id=container_id,
            status=Status.CREATED,
            bundle=str(options.bundle or ""),
            oci_version=config.oci_version,
            pid=init_pid,
            pid_start=pid_start_time(init_pid) or 0,
            created=now_rfc3339(),
            cgroup_path=cgroup.path,
            rootfs=str(config.root.path),
            annotations=dict(config.annotations),
        )
        store.save(state)
        if options.pid_file is not None:
            pid_file = options.pid_file if options.pid_file.is_absolute() \
                else Path.cwd() / options.pid_file
            write_atomic(pid_file, str(init_pid))
        return state
    except BaseException:
        _undo(init_pid, cgroup)
        store.remove(container_id)
        if config.hooks.poststop:
            # The spec goes on to delete after a failed create: this was the delete.
            stopped = _creating(container_id, config, options)._replace(status=Status.STOPPED)
            hooks.run_hooks_warning("poststop", config.hooks.poststop, stopped.oci())
        raise


def _creating(container_id: str, config: ContainerConfig, options: CreateOptions) -> State:
    """The state the create hooks see (with the init's PID once it has one)."""
    return State(id=container_id, status=Status.CREATING, bundle=str(options.bundle or ""),
                 oci_version=config.oci_version, created=now_rfc3339(),
                 rootfs=str(config.root.path), annotations=dict(config.annotations))


def check_console(terminal: bool, console_socket: Path | None) -> None:
    """A terminal needs somewhere to send its master, and a console socket a terminal."""
    if terminal and console_socket is None:
        raise ConfigError("process.terminal", "true needs a console socket "
                                              "(--console-socket) to send the terminal to")
    if console_socket is not None and not terminal:
        raise ConfigError("process.terminal", f"false, but a console socket ({console_socket}) "
                                              "was given: set it to true for a terminal")


class Placement(NamedTuple):
    """The cgroup the caller makes, limits and puts the container's first process in."""

    cgroup: Cgroup
    resources: Resources

    def place(self, pid: int) -> None:
        self.cgroup.create()
        self.cgroup.apply(self.resources)
        self.cgroup.add(pid)


def _fork_init(config: ContainerConfig, placement: Placement, state_dir: Path, stdio: Stdio,
               sys: sc.Syscalls, console_socket: Path | None = None, *,
               creating: State) -> int:
    join_fds: list[tuple[int, int]] = []
    unshare_flags = 0
    pid_ns_fd = -1  # a PID namespace to join, or -1
    opened: list[int] = []
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    user_r, user_w = os.pipe2(os.O_CLOEXEC)
    state_fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    opened += [sync_r, sync_w, user_r, user_w, state_fd]
    try:
        console = None
        if console_socket is not None:
            from runtime.terminal import connect_console  # only terminals need sockets

            console = connect_console(console_socket, config.process)
            opened.append(console.fd)
        # The user namespace is joined first: the others belong to it.
        for ns in sorted(config.namespaces, key=lambda n: n.type != "user"):
            flag = sc.NAMESPACE_FLAGS[ns.type]
            if ns.path is None:
                unshare_flags |= flag
                continue
            try:
                fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise ConfigError(f"linux.namespaces[{ns.type}].path",
                                  f"{ns.path}: {e.strerror}") from None
            opened.append(fd)
            if ns.type == "pid":
                pid_ns_fd = fd
            else:
                join_fds.append((fd, flag))
        new_pid_ns = bool(unshare_flags & sc.CLONE_NEWPID)
        mount_ns = config.namespace("mount")
        plan = InitPlan(
            config=config, join_fds=join_fds,
            unshare_flags=unshare_flags & ~sc.CLONE_NEWPID,
            state_dir_fd=state_fd, sync_fd=sync_w, userns_fd=user_r, stdio=stdio,
            setup_rootfs=mount_ns is not None and mount_ns.path is None, console=console,
        )
        if unshare_flags & sc.CLONE_NEWUSER:
            child = _fork_two_stages(plan, new_pid_ns, pid_ns_fd, sync_r, user_w, sys)
        else:
            child = _fork_with_pid_namespace(new_pid_ns, pid_ns_fd, sys)
            if child == 0:
                os.close(sync_r)
                os.close(user_w)
                run_init(plan, sys, entered=False)
        os.close(sync_w)
        opened.remove(sync_w)
        _place(placement, child, sync_r, user_w)
        return _await_ready(config, child, sync_r, user_w,
                            two_stages=bool(unshare_flags & sc.CLONE_NEWUSER), creating=creating)
    finally:
        for fd in opened:
            os.close(fd)


def _place(placement: Placement, child: int, sync_r: int, go_w: int) -> None:
    """Make the cgroup and put the just-forked ``child`` in it, then tell it so.

    Done after the fork rather than before: the child meanwhile makes its namespaces
    and builds its root filesystem (its cgroup namespace waits for this:
    ``runtime.init.enter_cgroup``), so the cgroup's mkdirs and writes, one per
    hierarchy on v1, and the child's work overlap on two CPUs instead of adding up."""
    try:
        placement.place(child)
    except BaseException as e:
        signal_pid(child, signal.SIGKILL)
        reap(child)
        # A child that failed first cannot be placed (ESRCH): its own report says why.
        raise _reported_error(sync_r) or e from None
    os.write(go_w, PLACED)


def _reported_error(sync_r: int) -> SetupError | None:
    """The error a dead child sent on the set-up channel, if it sent one."""
    for message in channel.messages(sync_r):
        if "error" in message:
            return SetupError(message["error"])
    return None


def _fork_with_pid_namespace(new_pid_ns: bool, join_fd: int, sys: sc.Syscalls) -> int:
    """fork() with the child born into a new (or the given) PID namespace, as its PID 1.

    Only the PID namespace "for children" changes, and it is set back at once, so
    the caller itself stays where it was."""
    if not new_pid_ns and join_fd < 0:
        return os.fork()
    own = os.open("/proc/self/ns/pid_for_children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if join_fd >= 0:
            sys.setns(join_fd, sc.CLONE_NEWPID)
        else:
            sys.unshare(sc.CLONE_NEWPID)
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:  # the parent, also when fork failed; the child stays inside
                sys.setns(own, sc.CLONE_NEWPID)
        return pid
    finally:
        os.close(own)


def _fork_two_stages(plan: InitPlan, new_pid_ns: bool, pid_ns_fd: int, sync_r: int,
                     user_w: int, sys: sc.Syscalls) -> int:
    """The user-namespace way: stage 1 enters the namespaces, then forks the init."""
    if new_pid_ns:
        plan = plan._replace(unshare_flags=plan.unshare_flags | sc.CLONE_NEWPID)
    elif pid_ns_fd >= 0:
        plan = plan._replace(join_fds=plan.join_fds + [(pid_ns_fd, sc.CLONE_NEWPID)])
    stage1 = os.fork()
    if stage1 == 0:
        os.close(sync_r)
        os.close(user_w)
        run_stage1(plan, sys)
    return stage1


def _await_ready(config: ContainerConfig, child: int, sync_r: int, user_w: int,
                 two_stages: bool, creating: State) -> int:
    """Follow the set-up channel until the init is ready; returns the init's PID.

    With two stages, stage 1's ``pid`` and the init's ``ready`` (or ``hooks``) come
    from two processes and may arrive in either order: both are awaited."""
    init_pid = 0 if two_stages else child
    ready = False
    hooks_due = False  # the init waits before pivot_root for the createRuntime hooks
    try:
        for message in channel.messages(sync_r):
            if "userns" in message:
                _write_id_maps(message["userns"], config)
                os.write(user_w, GO)
            elif "pid" in message:
                init_pid = message["pid"]
                reap(child)  # stage 1 exits right after saying it
            elif "error" in message:
                raise SetupError(message["error"])
            elif message.get("ready"):
                ready = True
            elif message.get("hooks"):
                hooks_due = True
            if hooks_due and init_pid:
                hooks_due = False
                hooks.caller_create_point(config.hooks, creating._replace(pid=init_pid).oci(),
                                          user_w)
            if ready and init_pid:
                return init_pid
        raise SetupError("container init exited during set-up without saying why")
    except BaseException:
        if two_stages:
            # After a failure stage 1 may still wait for us: end it, then reap it.
            signal_pid(child, signal.SIGKILL)
            reap(child)
        _undo(init_pid, None)
        raise


def _write_id_maps(pid: int, config: ContainerConfig) -> None:
    def lines(maps: tuple[IDMapping, ...]) -> str:
        return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)

    for name, maps in (("uid_map", config.uid_mappings), ("gid_map", config.gid_mappings)):
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(lines(maps))
        except OSError as e:
            raise SetupError(f"writing {name} for the user namespace: {e.strerror}") from None


def _undo(init_pid: int, cgroup: Cgroup | None) -> None:
    if init_pid:
        signal_pid(init_pid, signal.SIGKILL)
        reap(init_pid)
    if cgroup is not None:
        cgroup.remove()
