"""A fork server (zygote): the one place a threaded caller gets shims from.

``fork()`` in a process that runs threads copies only the calling thread; locks
other threads held (gRPC's, the allocator's, logging's) stay locked forever in
the child. So the agent starts a ``ForkServer`` before it starts any thread: a
single-threaded child that waits on a socket and forks each shim on request.

Requests and answers are pickled over a private socketpair between a parent and
the child it forked: both ends are the same program, nobody else holds the socket.

Two kinds of request:

    ShimRequest   start a container under a new shim; the answer is its ``State``
    ExecRequest   run a process in a running container and wait for it (a probe):
                  the server forks a helper and answers at once with the read end of
                  a pipe (passed as a file descriptor); the helper, a child subreaper,
                  execs the process, waits at most the timeout (killing it then),
                  reaps it and writes the pickled outcome into the pipe. So a slow
                  probe never holds up the server, and the caller waits on its own pipe.
                  The server reaps its helpers, and waits for them when it stops.
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from runtime.errors import RuntimeError_, SetupError
from runtime.processes import exit_code, reap_children, wait_with_timeout
from runtime.spec.model import ContainerConfig, Process
from runtime.state import State

_MAX_MESSAGE = 4 * 1024 * 1024
_REAP_EVERY = 0.5  # seconds: how often an idle server looks for ended helpers
_EXEC_MARGIN = 10.0  # seconds past an exec's timeout before its caller stops waiting


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
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock
        self._lock = threading.Lock()

    @classmethod
    def start(cls) -> ForkServer:
        """Fork the server. Call this before the caller starts any thread."""
        if threading.active_count() > 1:
            raise SetupError("start the fork server before any thread: "
                             f"{threading.active_count()} threads run already")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            code = 0
            try:
                _serve(theirs)
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        theirs.close()
        return cls(pid, ours)

    def spawn_shim(self, request: ShimRequest) -> State:
        """Start the container under a new shim (see ``runtime.shim``); thread-safe."""
        with self._lock:
            self._sock.send(pickle.dumps(request))
            answer: Any = pickle.loads(self._sock.recv(_MAX_MESSAGE))
        if isinstance(answer, RuntimeError_):
            raise answer
        if isinstance(answer, BaseException):
            raise SetupError(f"fork server: {answer}")
        if not isinstance(answer, State):
            raise SetupError(f"fork server answered {answer!r}")
        return answer

    def exec_and_wait(self, runtime_root: Path, cgroup_parent: str, container_id: str,
                      process: Process, timeout: float) -> int:
        """Run ``process`` (stdio on /dev/null) in the running container and return its
        exit code (128+n for signal n). Kills it and raises TimeoutError when it has
        not ended after ``timeout`` seconds; thread-safe, and other requests go on
        while it runs."""
        request = ExecRequest(runtime_root, cgroup_parent, container_id, process, timeout)
        with self._lock:
            self._sock.send(pickle.dumps(request))
            data, fds, _, _ = socket.recv_fds(self._sock, _MAX_MESSAGE, 1)
        answer: Any = pickle.loads(data)
        if not fds:
            if isinstance(answer, RuntimeError_):
                raise answer
            raise SetupError(f"fork server: exec in {container_id}: {answer}")
        with os.fdopen(fds[0], "rb") as pipe:
            outcome = _read_all(pipe.fileno(), timeout + _EXEC_MARGIN)
        if outcome is None:
            raise SetupError(f"fork server: exec in {container_id}: no answer after "
                             f"{timeout + _EXEC_MARGIN:g}s")
        if not outcome:
            raise SetupError(f"fork server: exec in {container_id}: its helper failed")
        result: Any = pickle.loads(outcome)
        if isinstance(result, bool) or not isinstance(result, int | BaseException):
            raise SetupError(f"fork server: exec in {container_id}: answered {result!r}")
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """Stop the server; shims it started keep running."""
        self._sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(sock: socket.socket) -> None:
    helpers: set[int] = set()
    try:
        while True:
            _reap_ended(helpers)
            if not select.select([sock], [], [], _REAP_EVERY)[0]:
                continue
            data = sock.recv(_MAX_MESSAGE)
            if not data:
                return  # the parent closed its end (or died)
            request: ShimRequest | ExecRequest = pickle.loads(data)
            if isinstance(request, ExecRequest):
                _start_exec(sock, request, helpers)
            else:
                sock.send(pickle.dumps(_spawn(request)))
    finally:
        for pid in helpers:  # each ends within its request's timeout
            exit_code(pid)


def _spawn(request: ShimRequest) -> object:
    from runtime.api import Runtime
    from runtime.shim import spawn_shim

    try:
        rt = Runtime(root=request.runtime_root, cgroup_parent=request.cgroup_parent)
        return spawn_shim(rt, request.container_id, bundle=request.bundle,
                          log_path=request.log_path, config=request.config)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        return e


def _start_exec(sock: socket.socket, request: ExecRequest, helpers: set[int]) -> None:
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
    except OSError as e:
        sock.send(pickle.dumps(SetupError(f"exec in {request.container_id}: pipe: {e}")))
        return
    try:
        pid = os.fork()
    except OSError as e:
        os.close(read_end)
        os.close(write_end)
        sock.send(pickle.dumps(SetupError(f"exec in {request.container_id}: fork: {e}")))
        return
    if pid == 0:
        code = 0
        try:
            sock.close()
            os.close(read_end)
            outcome = _exec_helper(request)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(outcome))
        except BaseException:  # noqa: BLE001 - the caller sees a pipe closed empty
            code = 1
        os._exit(code)
    helpers.add(pid)
    os.close(write_end)
    try:
        socket.send_fds(sock, [pickle.dumps(None)], [read_end])
    finally:
        os.close(read_end)


def _exec_helper(request: ExecRequest) -> object:
    """In the helper: exec, wait with the timeout, reap. Returns the exit code, or the
    exception to raise in the caller."""
    import prctl

    from runtime.api import Runtime

    try:
        # The exec'd process is re-parented to us, not to the server or the agent.
        prctl.set_child_subreaper(1)
        rt = Runtime(root=request.runtime_root, cgroup_parent=request.cgroup_parent)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = rt.exec(request.container_id, request.process._replace(terminal=False),
                          stdio=(devnull, devnull, devnull))
        finally:
            os.close(devnull)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        return e
    try:
        return wait_with_timeout(pid, request.timeout)
    except TimeoutError as e:
        return e
    finally:
        reap_children()


def _reap_ended(helpers: set[int]) -> None:
    for pid in list(helpers):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            helpers.discard(pid)


def _read_all(fd: int, timeout: float) -> bytes | None:
    """Everything until end of file, or None when the deadline passes first."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
