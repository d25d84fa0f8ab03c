"""Exec: a command run in a pod's running container, attached to a gRPC stream.

The agent runs gRPC threads, so it never forks: the fork server starts the process
(``runtime.forkserver.ForkServer.start_session``) and hands back its stdio — pipes,
or a pty's master with a terminal — and its exit status. One session per call:

    first request   ``start``: which container, the command, tty, stdin, terminal size
                    (anything else first is INVALID_ARGUMENT, as is an empty command;
                    an unknown pod or container NOT_FOUND; a container that is not
                    running FAILED_PRECONDITION)
    the stream      stdout and stderr as they come (a terminal: stdout only), then one
                    ``exit``: exit code (128+n for signal n), the signal, a message
    a program that cannot be executed
                    ``exit`` 127 (not found) or 126 (found, not executable), with the
                    runtime's message, as a shell (and ``kubectl exec``) reports them

A thread per session feeds the later requests (stdin, resize, close_stdin) to the
process; the call's own thread copies output. When the call ends early (the client
cancels or goes away) the process is killed by its PID, reaped, and every fd closed.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

import grpc

from proto.podium.v1 import agent_pb2, pod_pb2
from runtime.errors import ContainerNotFound, IllegalTransition, RuntimeError_, SetupError
from runtime.execsessions import ExecSession, ExitStatus, SessionRequest

if TYPE_CHECKING:
    from agent.pods import ImageSource
    from runtime.api import Runtime
    from runtime.forkserver import ForkServer
    from runtime.spec.model import Process

log = logging.getLogger("podium.agent")

_CHUNK = 32 * 1024  # bytes of output per message
_DRAIN = 0.2  # seconds: after the exit, how long output may stay silent before we stop
_FEED_POLL = 0.2  # seconds between a blocked stdin writer's checks for the end
_EOF = b"\x04"  # a terminal's end of input: what close_stdin sends with a tty

StartSession = Callable[[SessionRequest], ExecSession]
# (pod, index of the container) → the process exec starts from: the container's
# user, env, working directory and capabilities; the command replaces its args.
ProcessTemplate = Callable[[pod_pb2.Pod, int], "Process"]


class ExecRefused(Exception):
    """The call cannot run: a gRPC code and a one-line message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ExecTarget(NamedTuple):
    pod: pod_pb2.Pod
    container_index: int  # in pod.spec.containers
    container_id: str  # the runtime's ID of its current run


def check_start(first: agent_pb2.ExecRequest | None) -> agent_pb2.ExecStart:
    if first is None or first.WhichOneof("request") != "start":
        got = "nothing" if first is None else (first.WhichOneof("request") or "an empty request")
        raise ExecRefused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Exec: the first request must be start, got {got}")
    if not first.start.command:
        raise ExecRefused(grpc.StatusCode.INVALID_ARGUMENT,
                          "Exec: start.command is empty: give the program to run")
    return first.start


def find_target(pods: Iterable[pod_pb2.Pod], start: agent_pb2.ExecStart) -> ExecTarget:
    """The running container ``start`` names, or ExecRefused saying why not."""
    namespace = start.namespace or "default"
    key = f"{namespace}/{start.pod}"
    pod = next((p for p in pods if p.metadata.namespace == namespace
                and p.metadata.name == start.pod), None)
    if pod is None:
        raise ExecRefused(grpc.StatusCode.NOT_FOUND, f"pod {key}: not on this node")
    names = [c.name for c in pod.spec.containers]
    name = start.container
    if not name:
        if len(names) != 1:
            raise ExecRefused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"pod {key}: name a container, one of {', '.join(names)}")
        name = names[0]
    if name not in names:
        raise ExecRefused(grpc.StatusCode.NOT_FOUND, f"pod {key}: no container {name!r}")
    status = next((cs for cs in pod.status.container_statuses if cs.name == name),
                  pod_pb2.ContainerStatus(name=name))
    state = status.state.WhichOneof("state")
    if state != "running":
        reason = status.state.waiting.reason if state == "waiting" else ""
        said = f"{state} ({reason})" if reason else (state or "not started")
        raise ExecRefused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"pod {key}: container {name} is not running: it is {said}")
    return ExecTarget(pod, names.index(name), status.container_id.removeprefix("podium://"))


def cannot_execute(error: SetupError) -> int | None:
    """127 or 126 when ``error`` says the program could not be executed (the runtime's
    "exec: …" messages), as a shell answers; None for any other failure."""
    text = str(error)
    if not text.startswith("exec:"):
        return None
    return 127 if "not found" in text or "no such file" in text else 126


def exit_message(status: ExitStatus) -> agent_pb2.ExecResponse:
    message = ""
    if status.signal:
        try:
            message = f"killed by signal {signal.Signals(status.signal).name}"
        except ValueError:
            message = f"killed by signal {status.signal}"
    return agent_pb2.ExecResponse(exit=agent_pb2.ExecExit(
        exit_code=status.exit_code, signal=status.signal, message=message))


class ExecService:
    """Runs Exec calls; ``close`` kills every process still attached (agent stop)."""

    def __init__(self, start: StartSession, runtime_root: Path, cgroup_parent: str,
                 template: ProcessTemplate) -> None:
        self._start = start
        self._root = runtime_root
        self._cgroup_parent = cgroup_parent
        self._template = template
        self._lock = threading.Lock()
        self._live: set[ExecSession] = set()

    def serve(self, requests: Iterator[agent_pb2.ExecRequest], context: grpc.ServicerContext,
              pods: Iterable[pod_pb2.Pod]) -> Iterator[agent_pb2.ExecResponse]:
        try:
            start = check_start(next(requests, None))
            target = find_target(pods, start)
            session = self._begin(start, target)
        except grpc.RpcError:
            return  # cancelled before it started
        except ExecRefused as e:
            _abort(context, e.code, str(e))
        except _CannotExecute as e:
            yield agent_pb2.ExecResponse(exit=agent_pb2.ExecExit(
                exit_code=e.code, message=str(e)))
            return
        wake = _Wake()
        with self._lock:
            self._live.add(session)

        def ended() -> None:
            # The call's end: wake the output loop, and kill at once, not only when
            # the loop runs again (it may wait in a send that will not complete).
            wake.set()
            session.kill()

        try:
            if not context.add_callback(ended):
                return  # the call ended already
            feeder = threading.Thread(
                target=_feed, args=(requests, session.take_stdin(), session.terminal,
                                    bool(start.stdin), wake), daemon=True,
                name=f"podium-exec-{session.pid}")
            feeder.start()
            yield from _pump(session, wake, context)
        finally:
            wake.close()
            session.close()
            with self._lock:
                self._live.discard(session)

    def _begin(self, start: agent_pb2.ExecStart, target: ExecTarget) -> ExecSession:
        key = f"{target.pod.metadata.namespace}/{target.pod.metadata.name}"
        try:
            template = self._template(target.pod, target.container_index)
        except Exception as e:  # noqa: BLE001 - the spec or image changed under the pod
            raise ExecRefused(grpc.StatusCode.FAILED_PRECONDITION,
                              f"pod {key}: cannot rebuild its process: {e}") from None
        size = None
        if start.tty and start.terminal_size.rows and start.terminal_size.columns:
            size = (start.terminal_size.rows, start.terminal_size.columns)
        process = template._replace(args=tuple(start.command), terminal=start.tty,
                                    console_size=size)
        request = SessionRequest(self._root, self._cgroup_parent, target.container_id,
                                 process, stdin=start.stdin)
        try:
            return self._start(request)
        except SetupError as e:
            code = cannot_execute(e)
            if code is None:
                raise ExecRefused(grpc.StatusCode.INTERNAL, f"pod {key}: {e}") from None
            raise _CannotExecute(code, str(e)) from None
        except (IllegalTransition, ContainerNotFound) as e:
            raise ExecRefused(grpc.StatusCode.FAILED_PRECONDITION, f"pod {key}: {e}") from None
        except RuntimeError_ as e:
            raise ExecRefused(grpc.StatusCode.INTERNAL, f"pod {key}: {e}") from None

    def close(self) -> None:
        with self._lock:
            live = list(self._live)
        for session in live:
            session.kill()


def make_exec_service(forkserver: ForkServer, rt: Runtime, images: ImageSource,
                      pods_dir: Path) -> ExecService:
    """The agent's service: sessions from its fork server, processes from the pod spec."""
    return ExecService(forkserver.start_session, rt.store.root, rt.cgroup_parent,
                       spec_template(images, pods_dir, rt.cgroup_parent))


def spec_template(images: ImageSource, pods_dir: Path, cgroup_parent: str) -> ProcessTemplate:
    """The container's process as its run started it, rebuilt from the pod and image
    (as the pod worker does for an adopted run's probes)."""
    from agent.pods import SandboxFacts, container_config, plan_volumes

    def template(pod: pod_pb2.Pod, index: int) -> Process:
        pod_dir = pods_dir / pod.metadata.uid
        facts = images.facts(pod.spec.containers[index].image)
        # Only the process is kept: the sandbox's paths shape the mounts, not it.
        sandbox = SandboxFacts(pod_dir=pod_dir, netns=pod_dir / "netns", files=None,
                               cgroup_parent=cgroup_parent,
                               volumes=plan_volumes(pod, pod_dir))
        config = container_config(pod, index, facts, sandbox, pod_dir / "exec",
                                  lambda user: images.lookup_user(facts, user))
        return config.process

    return template


class _CannotExecute(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Wake:
    """A pipe that wakes the output loop when the call ends (the RPC's callback, which
    may run after the loop is gone: it writes only while the pipe is open)."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._closed = False
        self.ended = threading.Event()

    def set(self) -> None:
        self.ended.set()
        with self._lock:
            if not self._closed:
                try:
                    os.write(self._w, b"x")
                except BlockingIOError:
                    pass

    def close(self) -> None:
        self.ended.set()
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)
                os.close(self._w)


def _pump(session: ExecSession, wake: _Wake, context: grpc.ServicerContext
          ) -> Iterator[agent_pb2.ExecResponse]:
    """Output until the process has ended and its output is drained, then its exit.
    Returns early, without an exit, when the call ends first."""
    outputs = {session.stdout: "stdout"}
    if session.stderr is not None:
        outputs[session.stderr] = "stderr"
    for fd in outputs:
        os.set_blocking(fd, False)
    status: ExitStatus | None = None
    while outputs or status is None:
        watch = [*outputs, wake.fd] + ([session.fileno()] if status is None else [])
        # Once it has ended, output still held open by a process it left behind is
        # not waited for: what is there is sent, then the exit.
        ready = select.select(watch, [], [], None if status is None else _DRAIN)[0]
        if not ready:
            break
        if wake.fd in ready:
            return
        if status is None and session.fileno() in ready:
            try:
                status = session.wait(0)
            except SetupError as e:
                _abort(context, grpc.StatusCode.INTERNAL, str(e))
        for fd in ready:
            if fd not in outputs:
                continue
            data = _read(fd)
            if data is None:
                continue
            if data and outputs[fd] == "stderr":
                yield agent_pb2.ExecResponse(stderr=data)
            elif data:
                yield agent_pb2.ExecResponse(stdout=data)
            else:
                del outputs[fd]
    assert status is not None
    yield exit_message(status)


def _read(fd: int) -> bytes | None:
    """Up to a chunk; b"" at end of output (EIO: a pty whose every slave closed);
    None when there is nothing after all."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno == errno.EIO:
            return b""
        raise


def _feed(requests: Iterator[agent_pb2.ExecRequest], fd: int | None, terminal: bool,
          stdin: bool, wake: _Wake) -> None:
    """The later requests → the process: stdin bytes, close_stdin, resize (a terminal's
    TIOCSWINSZ). Runs until the request stream ends, which it does when the call ends;
    owns ``fd`` and closes it."""
    from runtime.terminal import set_size

    try:
        if fd is not None:
            os.set_blocking(fd, False)
        for request in requests:
            kind = request.WhichOneof("request")
            if fd is None or wake.ended.is_set():
                continue
            if kind == "resize" and terminal:
                size = request.resize
                if size.rows and size.columns:
                    set_size(fd, (size.rows, size.columns))
            elif kind == "stdin" and stdin:
                if not _write_all(fd, request.stdin, wake):
                    os.close(fd)
                    fd = None
            elif kind == "close_stdin" and stdin:
                if terminal:
                    _write_all(fd, _EOF, wake)
                else:
                    os.close(fd)  # the pipe's last writer: the process reads EOF
                    fd = None
    except grpc.RpcError:
        pass  # the call was cancelled: the output loop ends it
    except Exception as e:  # noqa: BLE001 - the call's thread must hear nothing of this
        log.warning("exec: feeding the process: %s", e)
    finally:
        if fd is not None:
            os.close(fd)


def _write_all(fd: int, data: bytes, wake: _Wake) -> bool:
    """False once the process cannot take more (it has ended or closed its stdin), or
    the call has ended."""
    view = memoryview(data)
    while view:
        if wake.ended.is_set():
            return False
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], _FEED_POLL)
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.EIO):
                return False
            raise
    return True


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("abort returned")
