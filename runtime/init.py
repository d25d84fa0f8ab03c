"""What a container's init does between ``fork`` and ``execve``, in order.

A new PID namespace applies to the *children* of the process that makes it, and
the init must be PID 1 inside. Two ways get there:

- One fork (the usual case): the caller points the PID namespace of its next
  child at a new (or joined) one, forks the init, and points it back. The init
  then joins or makes the other namespaces itself (``enter``).
- Two forks (a new user namespace): the user namespace must exist before the
  PID namespace it will own, and the caller must not enter it, so stage 1 does
  ``enter`` (user namespace first, waiting while the caller writes its ID maps)
  and forks the init. Stage 1 then exits and the init is re-parented to the
  caller's nearest subreaper: either way, the caller owns the init.

Either way the caller makes the cgroup and puts its child in it while the child
starts, and says ``PLACED`` on the go pipe; the child waits for that before it
makes a cgroup namespace (its root is the cgroup it is made in), as late as it
may (``enter_cgroup``), and stage 1 before anything else (the ID-map go comes
on the same pipe).

The init sets the hostname and sysctls, builds the root filesystem (and, if the
config has hooks, stops there for them: ``runtime.hooks``) and pivots into it,
takes the process's identity and privileges, reports ``ready``, and blocks
opening ``exec.fifo`` until ``start`` opens the other end. Then it execs.

Forked code runs only what was imported before the fork, and leaves with
``os._exit`` so nothing of the caller (atexit handlers, buffers) runs twice.
docs/runtime.md walks through these steps with the system calls in order.
"""

from __future__ import annotations

import os
import stat
import sys as _sys
from typing import TYPE_CHECKING, NamedTuple

from runtime import channel, hooks
from runtime import syscalls as sc
from runtime.errors import SetupError
from runtime.rootfs import enter_rootfs, finish_rootfs, prepare_rootfs
from runtime.seccomp import compile_filter
from runtime.security import apply_identity_and_privileges, apply_rlimits
from runtime.signals import restore_for_exec
from runtime.spec.model import ContainerConfig, Process

if TYPE_CHECKING:
    from runtime.terminal import Console

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PLACED = b"c"  # on the go pipe: the caller has put this process in the container's cgroup
GO = b"1"  # on the go pipe: the caller wrote the user namespace's ID maps


class InitPlan(NamedTuple):
    """Everything the stages need, prepared by the caller before it forks."""

    config: ContainerConfig
    join_fds: list[tuple[int, int]]  # (fd of /proc/.../ns/X, CLONE_NEW* flag), user first;
    #                                  never the PID namespace (see the module docstring)
    unshare_flags: int  # namespaces to create, never CLONE_NEWPID (user first, separately)
    state_dir_fd: int  # O_PATH fd of the container's state directory (for exec.fifo)
    sync_fd: int  # write end of the set-up channel
    userns_fd: int  # read end of the go pipe: PLACED, GO once ID maps are written, and
    #                 the state once the createRuntime hooks ran (runtime.hooks)
    stdio: tuple[int | None, int | None, int | None]
    setup_rootfs: bool  # False when joining an existing mount namespace
    console: Console | None = None  # process.terminal: the connected console socket


def enter(plan: InitPlan, sys: sc.Syscalls) -> None:
    """Join or create the container's namespaces but two: the PID namespace, which the
    forking process arranged, and the cgroup namespace (``enter_cgroup``)."""
    redirect_stdio(plan.stdio)
    flags = plan.unshare_flags
    if flags & sc.CLONE_NEWUSER:
        # Stage 1 is placed before anything else: the init it forks inherits its cgroup.
        _await_go(plan.userns_fd, PLACED, "put the container in its cgroup")
    for fd, flag in plan.join_fds:
        sys.setns(fd, flag)
        os.close(fd)
    if flags & sc.CLONE_NEWUSER:
        sys.unshare(sc.CLONE_NEWUSER)
        channel.send(plan.sync_fd, userns=os.getpid())
        _await_go(plan.userns_fd, GO, "write the user namespace's ID maps")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        flags &= ~sc.CLONE_NEWUSER
    if flags & ~sc.CLONE_NEWCGROUP:
        sys.unshare(flags & ~sc.CLONE_NEWCGROUP)


def enter_cgroup(plan: InitPlan, sys: sc.Syscalls, placed: bool) -> None:
    """Wait (unless ``placed``) until the caller has put this process in the container's
    cgroup, then make the cgroup namespace, whose root is the cgroup it is made in.

    The one-fork init comes here as late as it may: before it mounts cgroupfs or reads
    its own cgroup, and before the create hooks, which may look the process up in its
    cgroup. So building the root filesystem overlaps the caller's cgroup writes."""
    if not placed:
        _await_go(plan.userns_fd, PLACED, "put the container in its cgroup")
    if plan.unshare_flags & sc.CLONE_NEWCGROUP:
        sys.unshare(sc.CLONE_NEWCGROUP)


def _await_go(fd: int, expected: bytes, what: str) -> None:
    if os.read(fd, 1) != expected:
        raise SetupError(f"the caller did not {what}")


def run_stage1(plan: InitPlan, sys: sc.Syscalls) -> None:
    """The two-fork way's first child; never returns."""
    code = 1
    try:
        enter(plan, sys)
        enter_cgroup(plan, sys, placed=True)
        pid = os.fork()
        if pid == 0:
            run_init(plan, sys, entered=True)
        channel.send(plan.sync_fd, pid=pid)
        code = 0
    except BaseException as e:  # noqa: BLE001 - every failure must reach the caller
        report_error(plan.sync_fd, e)
    os._exit(code)


def run_init(plan: InitPlan, sys: sc.Syscalls, entered: bool) -> None:
    """The container's init; never returns: it execs the user's program or exits."""
    try:
        if not entered:
            enter(plan, sys)
        config = plan.config
        # Built here, while libseccomp is still reachable (before pivot_root).
        seccomp_filter = compile_filter(config.seccomp, config.process)
        os.setsid()
        if config.hostname is not None:
            sys.sethostname(config.hostname)
        if config.domainname is not None:
            sys.setdomainname(config.domainname)
        for key, value in config.sysctl.items():
            _write_sysctl(key, value)
        early = not entered and any(m.type == "cgroup" for m in config.mounts)
        if early:
            enter_cgroup(plan, sys, placed=False)
        if plan.setup_rootfs:
            prepare_rootfs(config, sys)
        if not entered and not early:
            enter_cgroup(plan, sys, placed=False)
        # The create hooks' point: namespaces and mounts exist, pivot_root is still to come.
        hook_state = hooks.init_create_point(config.hooks, plan.sync_fd, plan.userns_fd)
        if plan.setup_rootfs:
            enter_rootfs(config, sys)
            finish_rootfs(config, sys)
        if plan.console is not None:
            # Here, not at setsid: the pty must come from the container's own devpts.
            plan.console.attach(sys if plan.setup_rootfs else None)
        process = config.process
        enter_cwd(process.cwd)
        path = resolve_executable(process)
        if process.oom_score_adj is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(process.oom_score_adj))
        apply_rlimits(process.rlimits)
        seccomp_filter.load_before_privileges_drop()
        apply_identity_and_privileges(process)
        channel.send(plan.sync_fd, ready=True)
        os.close(plan.sync_fd)
        # Blocks until `start` opens the fifo's read end.
        fifo = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=plan.state_dir_fd)
        os.close(plan.state_dir_fd)
        hooks.init_start_point(config.hooks, hook_state, fifo)
        os.write(fifo, b"0")
        os.close(fifo)
        restore_for_exec()  # after the last write to a pipe: SIGPIPE kills from here
        seccomp_filter.load_before_exec()
    except BaseException as e:  # noqa: BLE001
        report_error(plan.sync_fd, e)
        os._exit(1)
    try:
        os.execve(path, list(process.args), environ_of(process))
    except OSError as e:
        # Started already: the caller is gone, stderr is all there is.
        os.write(2, f"podium: exec {path}: {e.strerror}\n".encode())
        os._exit(127 if e.errno == 2 else 126)


def redirect_stdio(stdio: tuple[int | None, int | None, int | None]) -> None:
    for target, fd in enumerate(stdio):
        if fd is not None and fd != target:
            os.dup2(fd, target)


def report_error(fd: int, error: BaseException) -> None:
    if isinstance(error, SetupError):
        message = str(error)
    elif isinstance(error, OSError):
        # The seam's errors already read "mount X on Y: Permission denied".
        message = error.strerror or str(error)
        if error.filename and str(error.filename) not in message:
            message = f"{message}: {error.filename}"
    else:
        import traceback  # only for the unexpected; it costs every command 2 ms to load

        message = "".join(traceback.format_exception_only(type(error), error)).strip()
    try:
        channel.send(fd, error=message)
    except OSError:
        _sys.stderr.write(message + "\n")


def _write_sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise SetupError(f"sysctl {key}={value}: {e.strerror}") from None


def enter_cwd(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except FileNotFoundError:
        # Like Docker's WORKDIR: a missing working directory is made.
        try:
            os.makedirs(cwd, mode=0o755)
            os.chdir(cwd)
        except OSError as e:
            raise SetupError(f"cwd {cwd}: {e.strerror}") from None
    except OSError as e:
        raise SetupError(f"cwd {cwd}: {e.strerror}") from None


def environ_of(process: Process) -> dict[str, str]:
    env = {}
    for item in process.env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def resolve_executable(process: Process) -> str:
    """Find args[0] inside the container, as execvp would, so a missing program fails
    at ``create`` with the message runc gives, not later in the dark."""
    name = process.args[0]
    if "/" in name:
        _check_executable(name)
        return name
    search = environ_of(process).get("PATH", DEFAULT_PATH)
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise SetupError(f'exec: "{name}": executable file not found in $PATH')


def _check_executable(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SetupError(f"exec: {path}: no such file or directory") from None
    except OSError as e:
        raise SetupError(f"exec: {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise SetupError(f"exec: {path}: is a directory")
    if not st.st_mode & 0o111:
        raise SetupError(f"exec: {path}: permission denied")
