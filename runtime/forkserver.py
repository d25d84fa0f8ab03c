"""A fork server (zygote): the one place a threaded caller gets shims from.

``fork()`` in a process that runs threads copies only the calling thread; locks
other threads held (gRPC's, the allocator's, logging's) stay locked forever in
the child. So the agent never forks a shim itself: it starts a ``ForkServer``, a
single-threaded process that waits on a socket and forks each shim on request.
The server is a fresh interpreter (started by fork and exec, which is safe from
a threaded caller) that imports only the runtime (``ForkServer.start`` says why:
the shims' memory).

Requests and answers are pickled over a private socketpair between a parent and
the child it started: both ends are the same program, nobody else holds the socket.
A request is one byte saying its kind, then the pickle.

Three kinds of request:

    ShimRequest   start a container under a new shim: the server forks the shim,
                  ``runtime.shim.run_shim`` in a session of its own, and answers at
                  once with the read end of a pipe (passed as a file descriptor); the
                  shim has the container created and started and writes the pickled
                  ``State`` (or the error) into the pipe. So several containers start
                  at once. The server reaps each shim that ends; once the server is
                  gone, init (or the nearest subreaper) does.
                  The server does not even unpickle the request: the less it writes
                  between two forks, the more pages each shim shares with it and
                  with the other shims (see ``runtime.shim`` on memory).
    ExecRequest   run a process in a running container and wait for it (a probe):
                  a helper as above, a child subreaper, execs the process, waits at
                  most the timeout (killing it then), reaps it and writes the
                  pickled outcome into the pipe. So a slow
                  probe never holds up the server, and the caller waits on its own pipe.
                  The server reaps its helpers, and waits for them when it stops.
    SessionRequest
                  run a process in a running container attached to its caller (an
                  interactive exec): see ``runtime.execsessions``.
"""

from __future__ import annotations

import _thread
import gc
import os
import pickle
import select
import signal
import socket
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from runtime.channel import pickled, read_message, send_message
from runtime.errors import RuntimeError_, SetupError
from runtime.execsessions import (
    EXEC_MARGIN,
    MAX_MESSAGE,
    ExecSession,
    SessionRequest,
    attach_session,
    session_helper,
)
from runtime.processes import exit_code, reap_all, reap_children, wait_with_timeout
from runtime.shim import shim_outcome
from runtime.spec.model import ContainerConfig, Process
from runtime.state import State, StateStore

if TYPE_CHECKING:
    import subprocess

    from runtime.api import Runtime
    from runtime.cgroups.base import CgroupDriver
    from runtime.syscalls import Syscalls

_REAP_EVERY = 0.5  # seconds: how often an idle server looks for ended helpers and shims
_SESSION_SETUP = 30.0  # seconds an attached exec may take to start
_SHIM_START = 60.0  # seconds a container may take to be created and started
_SHIM, _EXEC, _SESSION = b"s", b"e", b"i"  # the kind of a request: its first byte


class ShimRequest(NamedTuple):
    runtime_root: Path
    cgroup_parent: str
    container_id: str
    config: ContainerConfig
    bundle: Path | None = None
    log_path: Path | None = None


class ExecRequest(NamedTuple):
    runtime_root: Path
    cgroup_parent: str
    container_id: str
    process: Process
    timeout: float


class ForkServer:
    def __init__(self, pid: int, sock: socket.socket,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._sock = sock
        self._process = process
        self._lock = _thread.allocate_lock()

    @classmethod
    def start(cls) -> ForkServer:
        """Start the server (from any thread: it is started with fork and exec).

        The server is a fresh interpreter (``python -c``, the caller's ``sys.path``)
        that imports only the runtime, not a fork of the caller: every shim is forked
        from it and shares its pages, and a fork of the agent would carry the agent's
        modules (gRPC, protobuf) and their at-fork handlers (threading's, logging's),
        which run in every child and copy each page they touch: about 0.5 MiB more
        in every shim, for as long as its container runs. (So this module imports
        ``subprocess``, which imports ``threading``, only here: threading's handler
        alone delays every forked child's first step by ~0.4 ms.)"""
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), *sys.path],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as e:
            ours.close()
            raise SetupError(f"fork server: cannot start {sys.executable}: {e}") from None
        finally:
            theirs.close()
        return cls(process.pid, ours, process)

    def spawn_shim(self, request: ShimRequest) -> State:
        """Start the container under a new shim (see ``runtime.shim``); thread-safe, and
        several may start at once: each caller waits for its own shim's answer."""
        fd = self._ask_for_fd(request, request.container_id)
        try:
            outcome = read_message(fd, _SHIM_START)
        finally:
            os.close(fd)
        if outcome is None:
            raise SetupError(f"fork server: container {request.container_id}: no answer "
                             f"from its shim after {_SHIM_START:g}s")
        return shim_outcome(outcome, request.container_id)

    def exec_and_wait(self, runtime_root: Path, cgroup_parent: str, container_id: str,
                      process: Process, timeout: float) -> int:
        """Run ``process`` (stdio on /dev/null) in the running container and return its
        exit code (128+n for signal n). Kills it and raises TimeoutError when it has
        not ended after ``timeout`` seconds; thread-safe, and other requests go on
        while it runs."""
        request = ExecRequest(runtime_root, cgroup_parent, container_id, process, timeout)
        fd = self._ask_for_fd(request, container_id)
        try:
            outcome = read_message(fd, timeout + EXEC_MARGIN)
        finally:
            os.close(fd)
        if outcome is None:
            raise SetupError(f"fork server: exec in {container_id}: no answer after "
                             f"{timeout + EXEC_MARGIN:g}s")
        if not outcome:
            raise SetupError(f"fork server: exec in {container_id}: its helper failed")
        result: Any = pickle.loads(outcome)
        if isinstance(result, bool) or not isinstance(result, int | BaseException):
            raise SetupError(f"fork server: exec in {container_id}: answered {result!r}")
        if isinstance(result, BaseException):
            raise result
        return result

    def _ask_for_fd(self, request: ShimRequest | ExecRequest | SessionRequest,
                    container_id: str) -> int:
        """Sends a request whose answer carries one descriptor (the helper's end),
        and returns it; an answer without one is the error it reports."""
        with self._lock:
            self._sock.send(_encode(request))
            data, fds, _, _ = socket.recv_fds(self._sock, MAX_MESSAGE, 1)
        answer: Any = pickle.loads(data)
        if not fds:
            if isinstance(answer, RuntimeError_):
                raise answer
            raise SetupError(f"fork server: {container_id}: {answer}")
        return fds[0]

    def start_session(self, request: SessionRequest,
                      timeout: float = _SESSION_SETUP) -> ExecSession:
        """Start ``request.process`` in the running container, attached to pipes (or a
        pty) this process reads and writes; thread-safe. A program that cannot be
        executed raises ``SetupError`` with the runtime's message ("exec: …")."""
        cid = request.container_id
        fd = self._ask_for_fd(request, cid)
        os.set_inheritable(fd, False)  # recv_fds cannot ask for MSG_CMSG_CLOEXEC
        control = socket.socket(fileno=fd)
        try:
            if not select.select([control], [], [], timeout)[0]:
                raise SetupError(f"fork server: exec in {cid}: not started after {timeout:g}s")
            data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 3)
            for fd in fds:
                os.set_inheritable(fd, False)
            return attach_session(request, control, data, fds)
        except BaseException:
            control.close()  # the helper kills the process, if it started one
            raise

    def close(self) -> None:
        """Stop the server; shims it started keep running."""
        self._sock.close()
        if self._process is not None:
            self._process.wait()
            return
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


# The server's interpreter: the caller's sys.path, then ``serve`` on the socket.
_BOOT = ("import sys; sys.path[:] = sys.argv[2:]; "
         "from runtime.forkserver import serve; serve(int(sys.argv[1]))")


def serve(fd: int) -> NoReturn:
    """The fork server's main (``ForkServer.start`` runs it), on its end of the
    socketpair; it returns when the caller closes the other end."""
    code = 0
    try:
        # Like the caller's terminal signals: the server ends with its socket, and
        # a handler (unlike SIG_IGN) does not outlive the exec of a container.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _no_op)
        _warm()
        _serve(socket.socket(fileno=fd))
    except BaseException:  # noqa: BLE001
        code = 1
    os._exit(code)


def _no_op(signum: int, frame: object) -> None:
    pass


def _serve(sock: socket.socket) -> None:
    helpers: set[int] = set()  # waited for when the server stops; shims are not
    try:
        while True:
            _reap_ended(helpers)
            if not select.select([sock], [], [], _REAP_EVERY)[0]:
                continue
            data = sock.recv(MAX_MESSAGE)
            if not data:
                return  # the parent closed its end (or died)
            kind, body = data[:1], data[1:]
            if kind == _SHIM:
                _start_shim(sock, body)
                continue
            request: ExecRequest | SessionRequest = pickle.loads(body)
            if isinstance(request, ExecRequest):
                _in_helper(sock, helpers, f"exec in {request.container_id}",
                           partial(_exec_helper, request))
            else:
                _fork_answering(sock, f"exec in {request.container_id}", _socketpair,
                                partial(session_helper, request=request, runtime=_runtime),
                                helpers)
    finally:
        for pid in helpers:  # each ends within its request's timeout
            exit_code(pid)


def _warm() -> None:
    """Imports, in the server, what creating a container, running its shim and
    exec'ing into it need: every helper and shim forked after this shares those
    pages with the server instead of importing its own copy."""
    import prctl  # noqa: F401 - imported to be shared

    import runtime.api  # noqa: F401
    import runtime.create  # noqa: F401
    import runtime.exec  # noqa: F401
    import runtime.init  # noqa: F401
    import runtime.shim  # noqa: F401
    import runtime.start  # noqa: F401
    from runtime.cgroups import detect
    from runtime.security import linux_ops
    from runtime.syscalls import LinuxSyscalls

    global _driver, _syscalls
    try:
        _driver = detect()  # once: every Runtime made here and in the children uses it
    except Exception:  # noqa: BLE001 - the container's create will say what is wrong
        pass
    # libc's handles and functions, looked up once here rather than in every child
    # (each lookup builds ctypes objects: about 0.5 ms a container).
    _syscalls = LinuxSyscalls()
    linux_ops()
    # Out of the collector's sight from now on: a collection here would write into
    # every object's header, and so unshare those pages from every shim forked
    # before it (each shim then owning a copy).
    gc.freeze()


def _start_shim(sock: socket.socket, body: bytes) -> None:
    """Forks the shim of a pickled ``ShimRequest`` and hands back the read end of the
    pipe it reports on. The shim is the server's child, not a grandchild through a
    middle process that exits (as ``runtime.shim.spawn_shim`` does for a caller that
    would not reap it): a fork and an exit less per container. The server reaps it
    if it ends first (``_reap_ended``) and never waits for it. Its own session keeps
    the agent's terminal and process group away from it."""

    def shim(report_fd: int) -> None:
        os.setsid()
        _shim_main(body, report_fd)

    _fork_answering(sock, "shim", _pipe, shim, None)


def _encode(request: ShimRequest | ExecRequest | SessionRequest) -> bytes:
    """A request as the server reads it: its kind's byte, then the pickle. A shim's is
    plain strings (``runtime.shim.ShimJob``; a bad ID fails here, in the caller) with
    the config pickled apart, for the child that creates the container to unpickle:
    the shim never does (see ``runtime.shim`` on memory)."""
    if isinstance(request, ShimRequest):
        r = request
        state_dir = str(StateStore(r.runtime_root).dir(r.container_id))
        return _SHIM + pickle.dumps((
            str(r.runtime_root), r.cgroup_parent, r.container_id, state_dir,
            None if r.log_path is None else str(r.log_path), pickle.dumps((r.config, r.bundle))))
    return (_EXEC if isinstance(request, ExecRequest) else _SESSION) + pickle.dumps(request)


def _shim_main(body: bytes, report_fd: int) -> None:
    """In the shim's process: read the request, then become its shim (never returns)."""
    from runtime.shim import ShimJob, run_shim

    try:
        root, cgroup_parent, container_id, state_dir, log_path, spec = pickle.loads(body)
        job = ShimJob(partial(_runtime, root, cgroup_parent), container_id, state_dir,
                      partial(pickle.loads, spec), log_path)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        send_message(report_fd, pickled(e))
        os._exit(1)
    run_shim(job, report_fd)


_driver: CgroupDriver | None = None  # the host's, detected by ``_warm``
_syscalls: Syscalls | None = None  # made by ``_warm``


def _runtime(root: str | Path, cgroup_parent: str) -> Runtime:
    """A Runtime on the driver detected once (detecting reads the mount table) and
    the system calls looked up once (``_warm``)."""
    from runtime.api import Runtime

    return Runtime(root=Path(root), cgroup_parent=cgroup_parent, cgroup_driver=_driver,
                   syscalls=_syscalls)


def _in_helper(sock: socket.socket, helpers: set[int], what: str,
               work: Callable[[], object]) -> None:
    """Forks a helper that runs ``work`` and writes its pickled outcome to a pipe whose
    read end goes back to the caller at once: the server is free for the next request
    while the helper works (an exec's wait)."""
    _fork_answering(sock, what, _pipe, lambda fd: send_message(fd, pickled(work())), helpers)


def _pipe() -> tuple[int, int]:
    """A pipe: (the caller's read end, the helper's write end)."""
    return os.pipe2(os.O_CLOEXEC)


def _socketpair() -> tuple[int, int]:
    """A socketpair, for a session: (the caller's end, the helper's end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return ours.detach(), theirs.detach()


def _fork_answering(sock: socket.socket, what: str, ends: Callable[[], tuple[int, int]],
                    child: Callable[[int], None], helpers: set[int] | None) -> None:
    """Forks a process that runs ``child`` with its end of a new channel (``ends``: a
    pipe or a socketpair), and sends the caller the other end (or the error). The
    process is added to ``helpers``, to be waited for when the server stops (None:
    a shim, which is not)."""
    try:
        ours, theirs = ends()
    except OSError as e:
        sock.send(pickle.dumps(SetupError(f"{what}: cannot make its channel: {e}")))
        return
    try:
        pid = os.fork()
    except OSError as e:
        os.close(ours)
        os.close(theirs)
        sock.send(pickle.dumps(SetupError(f"{what}: fork: {e}")))
        return
    if pid == 0:
        code = 0
        try:
            sock.close()
            os.close(ours)
            child(theirs)
        except BaseException:  # noqa: BLE001 - the caller sees its end closed empty
            code = 1
        os._exit(code)
    os.close(theirs)
    if helpers is not None:
        helpers.add(pid)
    try:
        socket.send_fds(sock, [pickle.dumps(None)], [ours])
    finally:
        os.close(ours)


def _exec_helper(request: ExecRequest) -> object:
    """In the helper: exec, wait with the timeout, reap. Returns the exit code, or the
    exception to raise in the caller."""
    import prctl

    try:
        # The exec'd process is re-parented to us, not to the server or the agent.
        prctl.set_child_subreaper(1)
        rt = _runtime(request.runtime_root, request.cgroup_parent)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = rt.exec(request.container_id, request.process._replace(terminal=False),
                          stdio=(devnull, devnull, devnull))
        finally:
            os.close(devnull)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        reap_all()
        return e
    try:
        return wait_with_timeout(pid, request.timeout)
    except TimeoutError as e:
        return e
    finally:
        reap_children()


def _reap_ended(helpers: set[int]) -> None:
    """Reaps every child that has ended, helper or shim, without waiting: one
    ``waitpid`` per ended child, not one per child that still runs."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no child at all
        if not pid:
            return
        helpers.discard(pid)
