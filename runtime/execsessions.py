"""Interactive execs: a process run in a container, attached to its caller.

The caller (the agent's Exec service) sends the fork server a ``SessionRequest``;
the server forks a helper (``session_helper``) and answers with one end of a
socketpair. The helper starts the process with pipes for its stdio (or a pty),
sends its PID and the caller's ends of them (SCM_RIGHTS) over the socketpair, then
waits for it: it sends the exit status when the process ends, and kills it
(SIGKILL to its process group, by PID, before reaping it) when the caller asks or
closes its end. The caller holds an ``ExecSession`` (``attach_session`` makes it
from the helper's first message).
"""

from __future__ import annotations

import _thread
import os
import pickle
import select
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from runtime.channel import pickled
from runtime.errors import RuntimeError_, SetupError
from runtime.processes import reap_all, reap_children, signal_pid
from runtime.spec.model import Process

if TYPE_CHECKING:
    from runtime.api import Runtime

MAX_MESSAGE = 4 * 1024 * 1024  # bytes of one message on the fork server's sockets
EXEC_MARGIN = 10.0  # seconds past an exec's end (or timeout) its caller waits for word
_KILL = b"kill"

# Makes the Runtime a helper execs with: (state root, cgroup parent) -> Runtime.
RuntimeFactory = Callable[[str | Path, str], "Runtime"]


class SessionRequest(NamedTuple):
    runtime_root: Path
    cgroup_parent: str
    container_id: str
    process: Process  # with ``terminal``: a pty for its stdio, the master handed back
    stdin: bool = False  # a pipe for its stdin; else /dev/null (a pty is stdin anyway)


class ExitStatus(NamedTuple):
    exit_code: int  # 128+n when signal n ended it
    signal: int = 0  # 0: it exited


class ExecSession:
    """A process exec'd in a container by the fork server, attached to this process.

    ``stdout`` (and ``stderr`` without a terminal) are read ends of its output;
    ``stdin`` writes to its input: a pipe, None when it reads /dev/null, or with a
    terminal a second fd of the pty's master (``stdout`` is the master), which also
    takes ``TIOCSWINSZ``. Every fd is close-on-exec and the session's own until
    ``take_stdin`` hands that one over; ``close`` closes the rest. ``fileno`` is
    readable when the exit status has arrived, for ``select``.
    """

    def __init__(self, pid: int, control: socket.socket, stdout: int, stderr: int | None,
                 stdin: int | None, terminal: bool, container_id: str) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.terminal = terminal
        self.container_id = container_id
        self._control = control
        self._status: ExitStatus | None = None
        self._closed = False
        self._lock = _thread.allocate_lock()  # kill (any thread) against close

    def fileno(self) -> int:
        return self._control.fileno()

    def take_stdin(self) -> int | None:
        """The stdin fd, now the caller's to write and close (closing a pipe is EOF)."""
        fd, self.stdin = self.stdin, None
        return fd

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """The exit status, once the process has ended and been reaped; None when it
        still runs after ``timeout`` seconds (None: wait as long as it takes)."""
        if self._status is not None or self._closed:
            return self._status
        if not select.select([self._control], [], [], timeout)[0]:
            return None
        try:
            data = self._control.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        answer: Any = pickle.loads(data) if data else None
        if not isinstance(answer, ExitStatus):
            raise SetupError(f"exec in {self.container_id}: its helper ended without "
                             f"the exit status of process {self.pid}")
        self._status = answer
        return answer

    def kill(self) -> None:
        """SIGKILL the process (and its process group); it is reaped and its status
        sent as when it ends by itself. Thread-safe; a no-op once it has ended."""
        with self._lock:
            if self._status is None and not self._closed:
                try:
                    self._control.send(_KILL)
                except OSError:
                    pass  # the helper is gone already: so is the process

    def close(self) -> None:
        """Kill the process if it still runs, wait until it is reaped (a bounded
        wait), and close every fd the session still holds."""
        if self._closed:
            return
        try:
            if self._status is None:
                self.kill()
                self.wait(EXEC_MARGIN)
        except SetupError:
            pass  # the helper died: it took the process with it, or init reaps it
        finally:
            with self._lock:
                self._closed = True
                self._control.close()
                for fd in (self.stdout, self.stderr, self.stdin):  # three distinct fds
                    if fd is not None:
                        _close(fd)


def attach_session(request: SessionRequest, control: socket.socket, data: bytes,
                   fds: list[int]) -> ExecSession:
    """The caller's side of a started session, from the helper's first message."""
    cid = request.container_id
    try:
        answer: Any = pickle.loads(data) if data else None
        if isinstance(answer, RuntimeError_):
            raise answer
        if isinstance(answer, BaseException):
            raise SetupError(f"exec in {cid}: {answer}")
        terminal = request.process.terminal
        expected = 1 if terminal else 2 + request.stdin
        if isinstance(answer, bool) or not isinstance(answer, int) or len(fds) != expected:
            raise SetupError(f"fork server: exec in {cid}: its helper failed")
        if terminal:
            return ExecSession(answer, control, fds[0], None, os.dup(fds[0]), True, cid)
        return ExecSession(answer, control, fds[0], fds[1], fds[2] if request.stdin else None,
                           False, cid)
    except BaseException:
        for fd in fds:
            _close(fd)
        raise


def session_helper(control_fd: int, request: SessionRequest, runtime: RuntimeFactory) -> None:
    """In the helper the fork server forked, on its end of the caller's socketpair:
    start the process, hand its stdio over, then wait for its end (or the caller's
    word to kill it) and report its status."""
    control = socket.socket(fileno=control_fd)
    import prctl

    # The exec'd process is re-parented to us: we reap it, and until then its PID
    # (and its process group's ID) cannot name another process.
    prctl.set_child_subreaper(1)
    try:
        pid, fds = _session_exec(request, runtime)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        reap_all()
        control.send(pickled(e))
        return
    try:
        socket.send_fds(control, [pickle.dumps(pid)], fds)
    except OSError:
        _kill_group(pid)  # nobody is left to talk to it
    finally:
        for fd in fds:
            os.close(fd)
    status = _watch(pid, control)
    try:
        control.send(pickle.dumps(status))
    except OSError:
        pass
    reap_children()


def _session_exec(request: SessionRequest, runtime: RuntimeFactory) -> tuple[int, list[int]]:
    """Exec the process; its PID and the caller's ends: [master] with a terminal,
    else [stdout, stderr] and the stdin pipe's write end when asked for."""
    rt = runtime(request.runtime_root, request.cgroup_parent)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    theirs: list[int] = []  # the child's ends: ours to close once it holds them
    ours: list[int] = []
    try:
        if request.process.terminal:
            from runtime.terminal import ConsoleListener

            with ConsoleListener() as listener:
                pid = rt.exec(request.container_id, request.process,
                              stdio=(devnull, devnull, devnull), console_socket=listener.path)
                try:
                    ours.append(listener.receive())
                except BaseException:
                    _kill_group(pid)
                    raise
            return pid, ours
        for _ in ("stdout", "stderr"):
            reader, writer = os.pipe2(os.O_CLOEXEC)
            ours.append(reader)
            theirs.append(writer)
        stdin = devnull
        if request.stdin:
            stdin, writer = os.pipe2(os.O_CLOEXEC)
            theirs.append(stdin)
            ours.append(writer)
        pid = rt.exec(request.container_id, request.process,
                      stdio=(stdin, theirs[0], theirs[1]))
        return pid, ours
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        os.close(devnull)
        for fd in theirs:
            os.close(fd)


def _watch(pid: int, control: socket.socket) -> ExitStatus:
    """Wait for our child ``pid`` to end, killing it when the caller asks or goes
    away; reap it and return how it ended."""
    pidfd = os.pidfd_open(pid)
    try:
        listening = True
        while True:
            ready = select.select([pidfd] + ([control] if listening else []), [], [])[0]
            if pidfd in ready:
                break
            try:
                word = control.recv(64)
            except OSError:
                word = b""
            if word == _KILL or not word:
                _kill_group(pid)
                listening = bool(word)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ExitStatus(128 + os.WTERMSIG(status), os.WTERMSIG(status))
    return ExitStatus(os.WEXITSTATUS(status))


def _kill_group(pid: int) -> None:
    """SIGKILL ``pid`` and its process group (it leads one: exec's stage 2 calls
    setsid), so a shell's children go with it. Only while ``pid`` is unreaped."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # no such group (it left it) or already gone
    signal_pid(pid, signal.SIGKILL)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
