"""The agent's Exec without root: the first request's checks and the container lookup
(pure), and whole calls over a real gRPC server whose sessions are played by a
thread on real pipes and a socketpair — output, stdin, exit, a program that cannot
be executed, and a cancelled call whose process is killed and whose fds and feeding
thread are gone."""

from __future__ import annotations

import gc
import os
import pickle
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from agent.execs import (
    ExecRefused,
    ExecService,
    cannot_execute,
    check_start,
    exit_message,
    find_target,
)
from agent.server import make_server
from proto.podium.v1 import agent_pb2, agent_pb2_grpc, pod_pb2
from runtime.errors import IllegalTransition, SetupError
from runtime.execsessions import ExecSession, ExitStatus, SessionRequest
from runtime.spec.model import Process


def pod(*containers: tuple[str, dict[str, Any] | None], name: str = "web") -> pod_pb2.Pod:
    doc = {"metadata": {"name": name, "namespace": "default", "uid": "u1"},
           "spec": {"containers": [{"name": n, "image": "busybox"} for n, _ in containers]},
           "status": {"containerStatuses": [
               {"name": n, "containerID": f"podium://u1.{n}.1", "state": state}
               for n, state in containers if state is not None]}}
    return json_format.ParseDict(doc, pod_pb2.Pod())


RUNNING: dict[str, Any] = {"running": {}}


def start(*command: str, **fields: Any) -> agent_pb2.ExecRequest:
    fields.setdefault("pod", "web")
    return agent_pb2.ExecRequest(start=agent_pb2.ExecStart(command=command, **fields))


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(ExecRefused) as refused:
        call()
    return refused.value.code, str(refused.value)


# --- the pure parts -------------------------------------------------------------------


def test_the_first_request_must_start_a_command() -> None:
    assert list(check_start(start("ls", "-l")).command) == ["ls", "-l"]
    assert refusal(lambda: check_start(None)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Exec: the first request must be start, got nothing")
    code, message = refusal(lambda: check_start(agent_pb2.ExecRequest(close_stdin=True)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "got close_stdin" in message
    code, message = refusal(lambda: check_start(start()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "command is empty" in message


def test_the_target_is_a_running_container_of_a_pod_here() -> None:
    one = pod(("app", RUNNING))
    target = find_target([one], start("true").start)
    assert (target.container_index, target.container_id) == (0, "u1.app.1")
    two = pod(("app", RUNNING), ("side", RUNNING))
    assert find_target([two], start("true", container="side").start).container_index == 1
    assert refusal(lambda: find_target([two], start("true").start)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "pod default/web: name a container, one of app, side")
    assert refusal(lambda: find_target([one], start("true", pod="db").start)) == (
        grpc.StatusCode.NOT_FOUND, "pod default/db: not on this node")
    assert refusal(lambda: find_target([one], start("true", namespace="x").start)) == (
        grpc.StatusCode.NOT_FOUND, "pod x/web: not on this node")
    assert refusal(lambda: find_target([one], start("true", container="db").start)) == (
        grpc.StatusCode.NOT_FOUND, "pod default/web: no container 'db'")
    waiting = pod(("app", {"waiting": {"reason": "CrashLoopBackOff"}}))
    assert refusal(lambda: find_target([waiting], start("true").start)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "pod default/web: container app is not running: it is waiting (CrashLoopBackOff)")
    ended = pod(("app", {"terminated": {"exitCode": 0}}))
    assert refusal(lambda: find_target([ended], start("true").start))[1].endswith(
        "it is terminated")
    unstarted = pod(("app", None))  # no status yet
    assert refusal(lambda: find_target([unstarted], start("true").start))[1].endswith(
        "it is not started")


def test_programs_that_cannot_run_answer_as_a_shell_does() -> None:
    assert cannot_execute(SetupError('exec: "x": executable file not found in $PATH')) == 127
    assert cannot_execute(SetupError("exec: /bin/x: no such file or directory")) == 127
    assert cannot_execute(SetupError("exec: /etc/passwd: permission denied")) == 126
    assert cannot_execute(SetupError("exec: /x: exec format error")) == 126
    assert cannot_execute(SetupError("cwd /nope: no such file or directory")) is None
    assert exit_message(ExitStatus(3)).exit == agent_pb2.ExecExit(exit_code=3)
    killed = exit_message(ExitStatus(137, 9)).exit
    assert (killed.exit_code, killed.signal, killed.message) == (137, 9,
                                                                 "killed by signal SIGKILL")


# --- whole calls, with a thread for the process -----------------------------------------


class FakeProcess:
    """Plays the fork server's helper and the exec'd process: ``cat`` (stdin to
    stdout, "err" on stderr first) that exits 0 at end of input (at once without
    stdin), or is killed; as ``sleep``, it only waits to be killed."""

    def __init__(self, request: SessionRequest) -> None:
        self.request = request
        ours, self.control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out_r, self.out_w = os.pipe2(os.O_CLOEXEC)
        err_r, self.err_w = os.pipe2(os.O_CLOEXEC)
        self.in_r, in_w = os.pipe2(os.O_CLOEXEC) if request.stdin else (-1, None)
        self.session = ExecSession(4242, ours, out_r, err_r, in_w, False,
                                   request.container_id)
        self.killed = threading.Event()
        self.running = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        os.write(self.err_w, b"err\n")
        self.running.set()
        status = ExitStatus(0)
        watch = [self.control.fileno()] + ([self.in_r] if self.in_r >= 0 else [])
        if self.request.process.args[0] == "sleep":
            watch = [self.control.fileno()]
        while self.in_r >= 0:  # without stdin: the end of input at once
            ready = select.select(watch, [], [])[0]
            if self.control.fileno() in ready:
                if self.control.recv(64) == b"kill":
                    self.killed.set()
                status = ExitStatus(137, 9)
                break
            data = os.read(self.in_r, 4096)
            if not data:
                break
            os.write(self.out_w, data)
        for fd in (self.out_w, self.err_w, self.in_r):
            if fd >= 0:
                os.close(fd)
        self.control.send(pickle.dumps(status))

    def caller_closed_everything(self) -> bool:
        """The session's side is closed: the control socket reads end of file."""
        self.thread.join(5)
        while select.select([self.control], [], [], 5)[0]:
            if self.control.recv(64) == b"":  # past any later word (a second kill)
                return True
        return False


@dataclass
class Agent:
    loop: Any
    execs: ExecService
    rt: Any = None
    pods_dir: Path = Path("/nonexistent")
    node_name: str = "node-1"
    cgroup_parent: str = "podium"
    state_root: Path = Path("/nonexistent")


@dataclass
class Loop:
    listed: list[pod_pb2.Pod]

    def pods(self) -> list[pod_pb2.Pod]:
        return list(self.listed)


@dataclass
class Harness:
    stub: agent_pb2_grpc.AgentServiceStub
    started: list[FakeProcess] = field(default_factory=list)
    fail_with: Exception | None = None


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(stub=None)  # type: ignore[arg-type]

    def start_session(request: SessionRequest) -> ExecSession:
        if h.fail_with is not None:
            raise h.fail_with
        fake = FakeProcess(request)
        h.started.append(fake)
        return fake.session

    def template(pod: pod_pb2.Pod, index: int) -> Process:
        return Process(args=("original",), cwd="/work")

    execs = ExecService(start_session, tmp_path / "runtime", "podium", template)
    server, _, _ = make_server(Agent(Loop([pod(("app", RUNNING))]), execs),
                               f"unix:{tmp_path / 'agent.sock'}")
    server.start()
    channel = grpc.insecure_channel(f"unix:{tmp_path / 'agent.sock'}")
    h.stub = agent_pb2_grpc.AgentServiceStub(channel)
    try:
        yield h
    finally:
        channel.close()
        server.stop(None).wait()
        for fake in h.started:
            fake.thread.join(5)
        # A cancelled call leaves gRPC objects in reference cycles: collect them here,
        # not in a child a later test forks (where freeing them wants threads).
        gc.collect()


def collect(answers: Iterable[agent_pb2.ExecResponse]) -> tuple[bytes, bytes, list[Any]]:
    out, err, exits = b"", b"", []
    for answer in answers:
        out += answer.stdout
        err += answer.stderr
        if answer.HasField("exit"):
            exits.append(answer.exit)
    return out, err, exits


def feeder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("podium-exec-")]


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_call_streams_output_feeds_stdin_and_ends_with_the_exit(harness: Harness) -> None:
    out, err, exits = collect(harness.stub.Exec(iter([
        start("cat", stdin=True), agent_pb2.ExecRequest(stdin=b"one\n"),
        agent_pb2.ExecRequest(resize=agent_pb2.TerminalSize(rows=5, columns=5)),  # no tty
        agent_pb2.ExecRequest(stdin=b"two\n"), agent_pb2.ExecRequest(close_stdin=True),
        agent_pb2.ExecRequest(stdin=b"after the end: dropped\n")]), timeout=10))
    assert (out, err) == (b"one\ntwo\n", b"err\n")
    assert [(e.exit_code, e.signal) for e in exits] == [(0, 0)]
    (fake,) = harness.started
    request = fake.request
    # The container's process, its args replaced by the command.
    assert (request.process.args, request.process.cwd) == (("cat",), "/work")
    assert (request.container_id, request.stdin, request.process.terminal) == (
        "u1.app.1", True, False)
    assert fake.caller_closed_everything()
    wait_until("the feeding thread's end", lambda: not feeder_threads())


def test_a_terminal_asks_for_a_pty_of_the_given_size(harness: Harness) -> None:
    # The fake plays pipes even so: what matters here is what the agent asked for.
    size = agent_pb2.TerminalSize(rows=30, columns=100)
    collect(harness.stub.Exec(iter([start("sh", tty=True, terminal_size=size)]), timeout=10))
    process = harness.started[0].request.process
    assert (process.terminal, process.console_size) == (True, (30, 100))


def test_a_program_that_cannot_run_exits_127_with_the_reason(harness: Harness) -> None:
    harness.fail_with = SetupError('exec: "nope": executable file not found in $PATH')
    out, err, exits = collect(harness.stub.Exec(iter([start("nope")]), timeout=10))
    assert (out, err, [(e.exit_code, e.message) for e in exits]) == (
        b"", b"", [(127, 'exec: "nope": executable file not found in $PATH')])
    harness.fail_with = IllegalTransition("container u1.app.1 is stopped: cannot exec in it")
    with pytest.raises(grpc.RpcError) as refused:
        collect(harness.stub.Exec(iter([start("true")]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot exec in it" in str(refused.value.details())


def test_refusals_are_grpc_codes(harness: Harness) -> None:
    for request, code in [(start("true", pod="db"), grpc.StatusCode.NOT_FOUND),
                          (start(), grpc.StatusCode.INVALID_ARGUMENT),
                          (agent_pb2.ExecRequest(stdin=b"x"), grpc.StatusCode.INVALID_ARGUMENT)]:
        with pytest.raises(grpc.RpcError) as refused:
            collect(harness.stub.Exec(iter([request]), timeout=10))
        assert refused.value.code() == code
    assert not harness.started


def test_a_cancelled_call_kills_the_process_and_leaves_nothing(harness: Harness) -> None:
    requests: queue.Queue[agent_pb2.ExecRequest | None] = queue.Queue()
    requests.put(start("sleep", stdin=True))
    call: Any = harness.stub.Exec(iter(requests.get, None), timeout=10)
    assert next(call).stderr == b"err\n"
    (fake,) = harness.started
    call.cancel()
    assert call.code() == grpc.StatusCode.CANCELLED
    assert fake.killed.wait(5), "the process was not killed"
    assert fake.caller_closed_everything()
    requests.put(None)
    wait_until("the feeding thread's end", lambda: not feeder_threads())


def test_the_feeding_thread_ends_with_the_call_while_the_client_still_sends(
        harness: Harness) -> None:
    requests: queue.Queue[agent_pb2.ExecRequest | None] = queue.Queue()
    requests.put(start("true"))  # no stdin: the fake process ends at once
    try:
        out, err, exits = collect(harness.stub.Exec(iter(requests.get, None), timeout=10))
        assert [e.exit_code for e in exits] == [0]
        # The client has not closed its side of the stream; the call is over even so.
        wait_until("the feeding thread's end", lambda: not feeder_threads())
    finally:
        requests.put(None)
