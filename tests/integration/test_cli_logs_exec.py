"""``podium logs`` and ``podium exec``: the installed command in a subprocess, against
a real scheduler and a real agent running real containers.

``logs``: the whole output, ``-c``, ``--tail``, ``-f`` streaming new lines and ending
when the container stops (or on SIGINT), ``-p`` for the instance before a restart.
``exec``: stdout and stderr apart, stdin with ``-i``, the command's exit code as the
CLI's, and ``-it`` on a real pseudo-terminal (raw mode, the window size and its
changes passed on). A missing pod or container is one line naming it, exit 1; so
is an agent that is down, named by its node.
"""

from __future__ import annotations

import fcntl
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from client.api import Client
from tests.conftest import need
from tests.support.nodes import LocalCluster, need_cluster_tools, wait_for

pytestmark = pytest.mark.root

PODIUM = Path(sys.executable).parent / "podium"
IMAGE = "podium-test/busybox:logs-exec"
NODE = "plx1"
POD = "plx-pod"
# "talker" says three lines, then one more when /tmp/go appears and "bye" when
# /tmp/stop does, and exits 0: restartPolicy Always starts it again at once.
MANIFEST = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {POD}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: talker
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      echo one; echo two; echo three
      until [ -e /tmp/go ]; do sleep 0.1; done; rm /tmp/go; echo four
      until [ -e /tmp/stop ]; do sleep 0.1; done; rm /tmp/stop; echo bye
  - name: shell
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo ready; while :; do sleep 1; done"]
"""
WAIT = 60.0


class Setup(LocalCluster):
    def __init__(self, tmp: Path, busybox_rootfs: Path, cgroup_parent: str) -> None:
        super().__init__(tmp, busybox_rootfs, cgroup_parent, IMAGE, [NODE], "plxbr")
        self.tmp = tmp
        self.agent = self.agents[NODE]
        # COLUMNS and LINES would override the terminal's own size.
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.env["PODIUM_SERVER"] = self.scheduler.address
        self.env.pop("NO_COLOR", None)

    def start(self) -> None:
        """The cluster up and the pod's two containers running."""
        super().start()
        wait_for("the node Ready", lambda: self.ready_nodes() == 1, WAIT, self.logs)
        with Client(self.scheduler.address) as c:
            (self.tmp / "pod.yaml").write_text(MANIFEST)
            self.ok("apply", "-f", str(self.tmp / "pod.yaml"))
            wait_for("both containers running", lambda: self.running(c) == {"talker", "shell"},
                     WAIT, self.logs)

    def running(self, c: Client) -> set[str]:
        pod = c.get("Pod", POD)
        return {cs.name for cs in pod.status.container_statuses
                if cs.state.WhichOneof("state") == "running"}

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(PODIUM), *args], capture_output=True, text=True,
                              env=self.env, input=stdin, timeout=WAIT)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert (result.returncode, result.stderr) == (0, ""), (result, self.logs())
        return result.stdout

    def fails(self, *args: str) -> str:
        """The one line a failing command writes, exit code 1."""
        result = self.run(*args)
        assert result.returncode == 1 and result.stdout == "", result
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        return lines[0]

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(PODIUM), *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)


@pytest.fixture
def setup(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Setup]:
    need_cluster_tools()
    need(PODIUM.exists(), f"needs {PODIUM}: pip install -e '.[dev]'")
    with Setup(tmp_dir, busybox_rootfs, cgroup_parent) as s:
        yield s


class Lines:
    """A pipe's lines as they come, read by a thread so a test can wait with a limit."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            self._queue.put(line.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def until(self, wanted: str) -> list[str]:
        """Every line up to and including ``wanted``."""
        deadline = time.monotonic() + WAIT
        start = len(self.seen)
        while wanted not in self.seen[start:]:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"the output ended before {wanted!r}: {self.seen}")
            self.seen.append(line)
        return self.seen[start:]

    def rest(self) -> list[str]:
        """The lines left once the pipe closes."""
        self._thread.join(timeout=WAIT)
        assert not self._thread.is_alive(), "the output did not end"
        out = []
        while (line := self._queue.get_nowait()) is not None:
            out.append(line)
        return out


def test_logs_whole_tail_follow_previous_and_errors(setup: Setup) -> None:
    setup.start()
    assert setup.ok("logs", POD, "-c", "talker") == "one\ntwo\nthree\n"
    assert setup.ok("logs", POD, "--container", "talker", "--tail", "1") == "three\n"
    assert setup.ok("logs", POD, "-c", "shell") == "ready\n"
    assert setup.ok("logs", POD, "-c", "talker", "--tail", "0") == ""
    assert setup.ok("logs", POD, "-c", "talker", "--tail", "-1") == "one\ntwo\nthree\n"

    # -f: the lines so far, then new ones as they are written, and the command
    # ends by itself when the container stops.
    follow = setup.popen("logs", "-f", POD, "-c", "talker")
    out = Lines(follow.stdout)  # type: ignore[arg-type]
    assert out.until("three") == ["one", "two", "three"]
    assert setup.ok("exec", POD, "-c", "talker", "--", "touch", "/tmp/go") == ""
    assert out.until("four") == ["four"]
    assert setup.ok("exec", POD, "-c", "talker", "--", "touch", "/tmp/stop") == ""
    assert out.until("bye") == ["bye"]
    assert out.rest() == []
    assert follow.wait(timeout=WAIT) == 0, follow.stderr.read()  # type: ignore[union-attr]
    follow.stderr.close()  # type: ignore[union-attr]

    # The container exited 0 and was started again: -p shows the run that ended,
    # without -p the new run.
    with Client(setup.scheduler.address) as c:
        def restarted() -> bool:
            cs = {s.name: s for s in c.get("Pod", POD).status.container_statuses}["talker"]
            return bool(cs.restart_count >= 1 and cs.state.WhichOneof("state") == "running")

        wait_for("talker restarted", restarted, WAIT, setup.logs)
    assert setup.ok("logs", POD, "-c", "talker", "-p") == "one\ntwo\nthree\nfour\nbye\n"
    assert setup.ok("logs", POD, "-c", "talker", "--previous", "--tail", "2") == "four\nbye\n"
    wait_for("the new run's lines", lambda: setup.ok("logs", POD, "-c", "talker")
             == "one\ntwo\nthree\n", WAIT, setup.logs)
    # "shell" never restarted: it has no previous run to show.
    assert "no previous run" in setup.fails("logs", POD, "-c", "shell", "-p")

    # -f on a container that keeps running ends on SIGINT, as ^C ends it.
    follow = setup.popen("logs", "-f", POD, "-c", "talker")
    out = Lines(follow.stdout)  # type: ignore[arg-type]
    assert out.until("three") == ["one", "two", "three"]
    follow.send_signal(signal.SIGINT)
    assert follow.wait(timeout=WAIT) == 130
    assert follow.stderr.read() == b"podium: interrupted\n"  # type: ignore[union-attr]
    follow.stderr.close()  # type: ignore[union-attr]
    assert out.rest() == []

    # Errors: one line naming what is missing.
    line = setup.fails("logs", POD)
    assert POD in line and "talker" in line and "shell" in line  # which container?
    line = setup.fails("logs", POD, "-c", "nope")
    assert line == f"Error from server (NotFound): pod default/{POD}: no container 'nope'"
    assert setup.fails("logs", "ghost") == 'Error from server (NotFound): pods "ghost" not found'
    assert setup.fails("logs", "ghost", "-f") == ('Error from server (NotFound): '
                                                  'pods "ghost" not found')


def test_exec_streams_stdin_and_exit_codes(setup: Setup) -> None:
    setup.start()
    result = setup.run("exec", POD, "-c", "shell", "--", "sh", "-c",
                       "echo to-out; echo to-err >&2; exit 5")
    assert (result.returncode, result.stdout, result.stderr) == (5, "to-out\n", "to-err\n")
    assert setup.ok("exec", POD, "-c", "shell", "--", "cat", "/proc/1/cmdline") \
        .startswith("sh\0-c\0echo ready")  # the container's own PID namespace
    result = setup.run("exec", "-i", POD, "-c", "shell", "--", "tr", "a-z", "A-Z",
                       stdin="hello\nworld\n")
    assert (result.returncode, result.stdout) == (0, "HELLO\nWORLD\n"), result
    # Without -i the command's stdin is closed: cat ends at once.
    assert setup.run("exec", POD, "-c", "shell", "--", "cat", stdin="unused\n").stdout == ""

    # A program that is not there: 127, as a shell says it.
    result = setup.run("exec", POD, "-c", "shell", "--", "no-such-program")
    assert result.returncode == 127 and "no-such-program" in result.stderr, result

    line = setup.fails("exec", POD, "--", "true")
    assert POD in line and "talker" in line and "shell" in line  # which container?
    line = setup.fails("exec", POD, "-c", "nope", "--", "true")
    assert line == f"Error from server (NotFound): pod default/{POD}: no container 'nope'"
    assert setup.fails("exec", "ghost", "--", "true") == ('Error from server (NotFound): '
                                                          'pods "ghost" not found')
    usage = setup.run("exec", POD)
    assert usage.returncode == 2 and "give the command after --" in usage.stderr

    # The agent dies: the scheduler still answers, and the error names the node
    # whose agent it could not reach.
    setup.agent.kill()
    down = (f"Error from server (ServiceUnavailable): cannot reach the agent of node {NODE}: "
            "connection refused")
    assert setup.fails("exec", POD, "-c", "shell", "--", "true") == down
    assert setup.fails("logs", POD, "-c", "shell") == down
    assert setup.fails("logs", "-f", POD, "-c", "shell") == down


def _winsize(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class Terminal:
    """The far side of a pseudo-terminal: what the program under it wrote."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.text = ""

    def until(self, wanted: str, proc: subprocess.Popen[bytes]) -> str:
        deadline = time.monotonic() + WAIT
        while wanted not in self.text:
            assert time.monotonic() < deadline, f"no {wanted!r} in {self.text!r}"
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                assert proc.poll() is None, f"exited {proc.returncode}: {self.text!r}"
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: every copy of the other side is closed
                data = b""
            if not data:
                raise AssertionError(f"the terminal closed before {wanted!r}: {self.text!r}")
            self.text += data.decode(errors="replace")
        return self.text


def test_exec_it_runs_a_shell_on_a_real_terminal(setup: Setup) -> None:
    need(shutil.which("setsid") is not None, "needs setsid (util-linux)")
    setup.start()
    master, slave = os.openpty()
    try:
        _winsize(slave, 33, 101)
        before = termios.tcgetattr(slave)
        # setsid --ctty: the CLI leads a session whose controlling terminal is the
        # pty, so a window-size change reaches it as SIGWINCH from the kernel.
        proc = subprocess.Popen(["setsid", "--ctty", "--wait", str(PODIUM), "exec", "-it",
                                 POD, "-c", "shell", "--", "sh"],
                                stdin=slave, stdout=slave, stderr=slave, env=setup.env)
        term = Terminal(master)
        try:
            # Typed only at the prompt: the shell flushes what came before it.
            term.until("# ", proc)
            os.write(master, b"stty size; tty; echo $((6*7))\n")
            text = term.until("42\r\n", proc)
            assert "33 101\r\n" in text and "/dev/pts/" in text, text
            # The CLI put its terminal in raw mode: what the shell echoes is all
            # there is, no second echo of the local line discipline.
            assert termios.tcgetattr(slave)[3] & termios.ECHO == 0

            # The new size travels as a resize message, beside stdin: ask until
            # the shell's terminal has it.
            _winsize(master, 40, 120)
            deadline = time.monotonic() + WAIT
            for attempt in range(1, 1000):
                os.write(master, f"stty size; echo end{attempt}\n".encode())
                text = term.until(f"\nend{attempt}\r\n", proc)
                if "\n40 120\r\n" in text.rsplit(f"echo end{attempt}", 1)[-1]:
                    break
                assert time.monotonic() < deadline, f"size not passed on: {text!r}"
                time.sleep(0.2)

            os.write(master, b"exit 3\n")
            assert proc.wait(timeout=WAIT) == 3, term.text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # The terminal is given back as it was found.
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(slave)
        os.close(master)
