"""A fork server (zygote): the one place a threaded caller gets shims from.

``fork()`` in a process that runs threads copies only the calling thread; locks
other threads held (gRPC's, the allocator's, logging's) stay locked forever in
the child. So the agent starts a ``ForkServer`` before it starts any thread: a
single-threaded child that waits on a socket and forks each shim on request.

Requests and answers are pickled over a private socketpair between a parent and
the child it forked: both ends are the same program, nobody else holds the socket.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
from pathlib import Path
from typing import Any, NamedTuple

from runtime.errors import RuntimeError_, SetupError
from runtime.spec.model import ContainerConfig
from runtime.state import State

_MAX_MESSAGE = 4 * 1024 * 1024


class ShimRequest(NamedTuple):
    runtime_root: Path
    cgroup_parent: str
    container_id: str
    config: ContainerConfig
    bundle: Path | None = None
    log_path: Path | None = None


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

    def close(self) -> None:
        """Stop the server; shims it started keep running."""
        self._sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(sock: socket.socket) -> None:
    from runtime.api import Runtime
    from runtime.shim import spawn_shim

    while True:
        data = sock.recv(_MAX_MESSAGE)
        if not data:
            return  # the parent closed its end (or died)
        request: ShimRequest = pickle.loads(data)
        answer: object
        try:
            rt = Runtime(root=request.runtime_root, cgroup_parent=request.cgroup_parent)
            answer = spawn_shim(rt, request.container_id, bundle=request.bundle,
                                log_path=request.log_path, config=request.config)
        except BaseException as e:  # noqa: BLE001 - the caller gets every failure
            answer = e
        sock.send(pickle.dumps(answer))
