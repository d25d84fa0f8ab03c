"""podium-agent's Exec over gRPC on the real kernel: a command in a static pod's
busybox container — output, exit codes, stdin, a terminal with resize, programs that
cannot be executed, unknown pods — and a cancelled call whose process is killed and
reaped, leaving the agent with no more fds or processes than before.

The agent runs as in ``test_agent_daemon`` (its ``node`` fixture): in a test
network namespace, listening on a unix socket under the test's directory.
"""

from __future__ import annotations

import gc
import queue
import signal
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import grpc
import psutil
import pytest

from proto.podium.v1 import agent_pb2, agent_pb2_grpc
from tests.integration.test_agent_daemon import IMAGE, Node, node, running_pod, wait_for

pytestmark = pytest.mark.root
__all__ = ["node"]  # the fixture, shared with test_agent_daemon

MANIFEST = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: box
    image: {IMAGE}
    # No process comes or goes in it: the agent's descendants stay put between checks.
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"""


class Outcome:
    def __init__(self, answers: Iterable[agent_pb2.ExecResponse]) -> None:
        self.stdout = b""
        self.stderr = b""
        self.exits: list[agent_pb2.ExecExit] = []
        for answer in answers:
            kind = answer.WhichOneof("response")
            if kind == "stdout":
                self.stdout += answer.stdout
            elif kind == "stderr":
                self.stderr += answer.stderr
            else:
                self.exits.append(answer.exit)
        assert len(self.exits) == 1, self.exits

    @property
    def exit(self) -> agent_pb2.ExecExit:
        return self.exits[0]


def start(*command: str, **fields: Any) -> agent_pb2.ExecRequest:
    fields.setdefault("pod", "shell")
    return agent_pb2.ExecRequest(start=agent_pb2.ExecStart(command=command, **fields))


def run(stub: agent_pb2_grpc.AgentServiceStub, *requests: agent_pb2.ExecRequest) -> Outcome:
    return Outcome(stub.Exec(iter(requests), timeout=20))


class Requests:
    """A request stream the test feeds as it goes (the call stays open meanwhile)."""

    def __init__(self, first: agent_pb2.ExecRequest) -> None:
        self._queue: queue.Queue[agent_pb2.ExecRequest | None] = queue.Queue()
        self._queue.put(first)

    def send(self, request: agent_pb2.ExecRequest | None) -> None:
        self._queue.put(request)

    def __iter__(self) -> Iterator[agent_pb2.ExecRequest]:
        while (request := self._queue.get()) is not None:
            yield request


@pytest.fixture
def agent(node: Node) -> Iterator[tuple[agent_pb2_grpc.AgentServiceStub, Node]]:
    (node.manifests / "shell.yaml").write_text(MANIFEST)
    node.start()
    channel = grpc.insecure_channel(f"unix:{node.sock}")
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    try:
        wait_for("the pod Running", lambda: running_pod(stub), node)
        yield stub, node
        # The agent removes the pod, its cgroups included, as the manifest goes.
        (node.manifests / "shell.yaml").unlink()
        wait_for("the pod gone", lambda: not stub.ListPods(agent_pb2.ListPodsRequest(),
                                                           timeout=5).pods, node)
    finally:
        channel.close()
        # Cancelled calls leave gRPC objects in reference cycles: collect them now, not
        # in a child a later test forks (where freeing them wants threads).
        gc.collect()


def test_exec_output_exit_codes_stdin_and_refusals(agent: tuple[Any, Node]) -> None:
    stub, _ = agent
    hi = run(stub, start("echo", "hi"))
    assert (hi.stdout, hi.stderr, hi.exit.exit_code, hi.exit.signal) == (b"hi\n", b"", 0, 0)
    # The container's own namespaces: its PID 1 is the pod's command.
    assert run(stub, start("cat", "/proc/1/cmdline")).stdout.startswith(b"sh\0-c\0trap")

    err = run(stub, start("sh", "-c", "echo out; echo err >&2; exit 3", container="box"))
    assert (err.stdout, err.stderr, err.exit.exit_code) == (b"out\n", b"err\n", 3)
    killed = run(stub, start("sh", "-c", "kill -9 $$"))
    assert (killed.exit.exit_code, killed.exit.signal) == (137, 9)
    assert "SIGKILL" in killed.exit.message

    fed = run(stub, start("cat", stdin=True), agent_pb2.ExecRequest(stdin=b"one\n"),
              agent_pb2.ExecRequest(stdin=b"two\n"), agent_pb2.ExecRequest(close_stdin=True))
    assert (fed.stdout, fed.exit.exit_code) == (b"one\ntwo\n", 0)
    # Without stdin the process reads /dev/null, whatever the client sends.
    assert run(stub, start("cat"), agent_pb2.ExecRequest(stdin=b"lost")).stdout == b""

    missing = run(stub, start("no-such-program"))
    assert missing.exit.exit_code == 127 and missing.stdout == b""
    assert '"no-such-program": executable file not found' in missing.exit.message
    assert run(stub, start("/etc/passwd")).exit.exit_code == 126
    # Executable, but not a program: execve itself fails, after the set-up is done.
    made = run(stub, start("sh", "-c", "printf 'junk\\0' > /not-elf; chmod +x /not-elf"))
    assert made.exit.exit_code == 0, made.stderr
    garbage = run(stub, start("/not-elf"))
    assert garbage.exit.exit_code == 126
    assert garbage.exit.message == "exec: /not-elf: exec format error"
    # What those failures started is reaped already: no zombie in the container's PID
    # namespace (its init, on exit, would wait for every one of them).
    stats = run(stub, start("sh", "-c", "cat /proc/[0-9]*/stat")).stdout.decode()
    states = [line.rpartition(") ")[2][:1] for line in stats.splitlines()]
    assert len(states) >= 3 and "Z" not in states, stats

    for request, code, words in [
        (start("true", pod="nope"), grpc.StatusCode.NOT_FOUND, "pod default/nope"),
        (start("true", container="nope"), grpc.StatusCode.NOT_FOUND, "no container 'nope'"),
        (start("true", namespace="other"), grpc.StatusCode.NOT_FOUND, "pod other/shell"),
        (start(), grpc.StatusCode.INVALID_ARGUMENT, "command is empty"),
        (agent_pb2.ExecRequest(stdin=b"x"), grpc.StatusCode.INVALID_ARGUMENT, "got stdin"),
    ]:
        with pytest.raises(grpc.RpcError) as refused:
            run(stub, request)
        assert refused.value.code() == code
        assert words in str(refused.value.details())


def test_exec_with_a_terminal_and_resize(agent: tuple[Any, Node]) -> None:
    stub, _ = agent
    size = agent_pb2.TerminalSize(rows=24, columns=80)
    tty = run(stub, start("sh", "-c", "tty; stty size; echo err >&2", tty=True,
                          terminal_size=size))
    lines = tty.stdout.split(b"\r\n")
    assert lines[0].startswith(b"/dev/pts/") and lines[1:] == [b"24 80", b"err", b""]
    assert tty.stderr == b"" and tty.exit.exit_code == 0

    # Resize, then let the process look: the feed is in order, so the size is set first.
    requests = Requests(start("sh", "-c", "read go; stty size", tty=True, stdin=True,
                              terminal_size=size))
    requests.send(agent_pb2.ExecRequest(resize=agent_pb2.TerminalSize(rows=40, columns=123)))
    requests.send(agent_pb2.ExecRequest(stdin=b"go\n"))
    answers = stub.Exec(iter(requests), timeout=20)
    try:
        resized = Outcome(answers)
    finally:
        requests.send(None)
    assert resized.stdout.endswith(b"40 123\r\n")  # after the terminal's echo of "go"
    assert resized.exit.exit_code == 0

    # close_stdin on a terminal is its end-of-input character: cat reads EOF.
    typed = run(stub, start("cat", tty=True, stdin=True), agent_pb2.ExecRequest(stdin=b"abc\n"),
                agent_pb2.ExecRequest(close_stdin=True))
    assert typed.stdout.count(b"abc\r\n") == 2 and typed.exit.exit_code == 0  # echo, output


def cmdline(process: psutil.Process) -> list[str]:
    try:
        return list(process.cmdline())
    except psutil.Error:  # a zombie or gone: set-up stages come and go
        return []


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid)  # a zombie still exists: gone is reaped


def sleepers(agent_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(agent_pid).children(recursive=True)
            if cmdline(p) == ["sleep", "100"]]


def test_a_cancelled_exec_is_killed_and_leaves_nothing(agent: tuple[Any, Node]) -> None:
    stub, node = agent
    assert node.proc is not None
    agent_pid = node.proc.pid
    assert run(stub, start("true")).exit.exit_code == 0  # warm: the server's threads are up
    me = psutil.Process(agent_pid)
    descendants = {p.pid for p in me.children(recursive=True)}
    fds = me.num_fds()

    for how in ("cancel", "close the channel"):
        channel = grpc.insecure_channel(f"unix:{node.sock}")
        requests = Requests(start("sh", "-c", "sleep 100; echo never", stdin=True))
        call: Any = agent_pb2_grpc.AgentServiceStub(channel).Exec(iter(requests), timeout=20)
        found = wait_for("the exec'd sleep", lambda: sleepers(agent_pid) or None, node,
                         timeout=10)
        (sleeper,) = found
        shell = sleeper.parent()
        assert shell is not None and cmdline(shell)[:2] == ["sh", "-c"]
        if how == "cancel":
            call.cancel()
        else:
            channel.close()
        requests.send(None)
        # The shell (by its PID) and its child (its process group) are killed and reaped.
        for pid in (shell.pid, sleeper.pid):
            wait_for(f"process {pid} gone", partial(gone, pid), node, timeout=10)
        channel.close()

    # No process more than before (one then may have been a helper not yet reaped).
    wait_for("the agent's processes as before",
             lambda: {p.pid for p in me.children(recursive=True)} <= descendants, node,
             timeout=10)
    wait_for("the agent's fds as before", lambda: me.num_fds() <= fds, node, timeout=10)
    assert run(stub, start("echo", "still")).stdout == b"still\n"

    # An agent told to stop ends its execs too (its pods run on, for the next agent).
    requests = Requests(start("sleep", "100", stdin=True))
    call: Any = stub.Exec(iter(requests), timeout=20)
    (sleeper,) = wait_for("the exec'd sleep", lambda: sleepers(agent_pid) or None, node,
                          timeout=10)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=15) == 0, node.agent_log()
    requests.send(None)
    with pytest.raises(grpc.RpcError):
        list(call)
    wait_for(f"process {sleeper.pid} gone", partial(gone, sleeper.pid), node, timeout=10)
    node.start()  # the fixture's agent again, which adopts the pod and then removes it
    wait_for("the pod Running", lambda: running_pod(stub), node)
