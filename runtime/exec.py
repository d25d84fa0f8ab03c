"""``exec``: run another process inside a running container.

The same two stages as a container's start, minus the building: stage 1 joins the
container's cgroup and every namespace its init holds (user first, mount last, so
the root becomes the container's), then forks stage 2 into the container's PID
namespace; stage 2 takes the process's identity and privileges and execs. The
new process is re-parented to the caller's subreaper, like the init.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from runtime import channel
from runtime import syscalls as sc
from runtime.cgroups.base import Cgroup
from runtime.create import Stdio, check_console
from runtime.errors import IllegalTransition, SetupError
from runtime.init import enter_cwd, environ_of, redirect_stdio, report_error, resolve_executable
from runtime.processes import reap, signal_pid
from runtime.seccomp import Filter, compile_filter
from runtime.security import apply_identity_and_privileges, apply_rlimits
from runtime.signals import restore_for_exec
from runtime.spec.model import Process, Seccomp
from runtime.state import State, Status

if TYPE_CHECKING:
    from runtime.terminal import Console

# setns order: the user namespace owns the others; the mount namespace changes
# our root, so it goes last (after it, /proc/PID paths would be the container's).
_JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def exec_process(state: State, cgroup: Cgroup, process: Process, stdio: Stdio,
                 sys: sc.Syscalls, console_socket: Path | None = None,
                 seccomp: Seccomp | None = None) -> int:
    """Start ``process`` in the container and return its PID (as the host sees it).
    With ``process.terminal``, its pty's master goes to ``console_socket``. ``seccomp``
    is the container's profile: the new process gets the same filter."""
    if state.status is not Status.RUNNING:
        raise IllegalTransition(f"container {state.id} is {state.status.value}: "
                                "cannot exec in it")
    check_console(process.terminal, console_socket)
    console = None
    if console_socket is not None:
        from runtime.terminal import connect_console  # only terminals need sockets

        console = connect_console(console_socket, process)
    # Built here: the forked stages join the container's root, where libseccomp is not.
    seccomp_filter = compile_filter(seccomp, process)
    joins = _namespaces_to_join(state.pid)
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    stage1 = os.fork()
    if stage1 == 0:
        os.close(sync_r)
        _stage1(joins, cgroup, process, stdio, sync_w, sys, console, seccomp_filter)
    os.close(sync_w)
    if console is not None:
        os.close(console.fd)
    for fd, _ in joins:
        os.close(fd)
    pid = 0
    ready = False
    try:
        # Stage 1's pid and stage 2's ready come from two processes, in either order.
        # Read on to end of file: the pipe is close-on-exec, so it ends when execve
        # succeeded, and an execve that failed after "ready" still reports why.
        for message in channel.messages(sync_r):
            if "pid" in message:
                pid = message["pid"]
            elif "error" in message:
                raise SetupError(message["error"])
            elif message.get("ready"):
                ready = True
        if pid and ready:
            return pid
        raise SetupError("exec: the process exited during set-up without saying why")
    except BaseException:
        if pid:
            signal_pid(pid, 9)
        raise
    finally:
        os.close(sync_r)
        reap(stage1)


def _namespaces_to_join(pid: int) -> list[tuple[int, int]]:
    joins = []
    for ns_type in _JOIN_ORDER:
        name = sc.NAMESPACE_FILES[ns_type]
        target = f"/proc/{pid}/ns/{name}"
        try:
            if os.stat(target).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # a namespace type this kernel lacks
        joins.append((fd, sc.NAMESPACE_FLAGS[ns_type]))
    return joins


def _stage1(joins: list[tuple[int, int]], cgroup: Cgroup, process: Process, stdio: Stdio,
            sync_w: int, sys: sc.Syscalls, console: Console | None,
            seccomp_filter: Filter) -> None:
    code = 1
    try:
        redirect_stdio(stdio)
        cgroup.add(os.getpid())
        for fd, flag in joins:
            sys.setns(fd, flag)
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            _stage2(process, sync_w, console, seccomp_filter)
        channel.send(sync_w, pid=pid)
        code = 0
    except BaseException as e:  # noqa: BLE001 - every failure must reach the caller
        report_error(sync_w, e)
    os._exit(code)


def _stage2(process: Process, sync_w: int, console: Console | None,
            seccomp_filter: Filter) -> None:
    try:
        os.setsid()
        if console is not None:
            console.attach(None)  # the mount namespace is joined: /dev/ptmx is the container's
        enter_cwd(process.cwd)
        path = resolve_executable(process)
        apply_rlimits(process.rlimits)
        seccomp_filter.load_before_privileges_drop()
        apply_identity_and_privileges(process)
        # Loaded before "ready", not after: a failure must still reach the caller.
        seccomp_filter.load_before_exec()
        channel.send(sync_w, ready=True)
        restore_for_exec()  # after the last write to a pipe: SIGPIPE kills from here
        try:
            os.execve(path, list(process.args), environ_of(process))
        except OSError as e:  # ENOEXEC, a noexec mount, a missing #! interpreter
            reason = (e.strerror or str(e)).lower()
            raise SetupError(f"exec: {path}: {reason}") from None
    except BaseException as e:  # noqa: BLE001
        report_error(sync_w, e)
    os._exit(127)
