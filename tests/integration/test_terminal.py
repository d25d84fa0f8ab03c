"""Terminals, driven as a container engine drives them: the test listens on a console
socket, runs ``podium-runtime create --console-socket`` (or ``exec --tty``), receives
the pty's master, types commands into it and reads what comes back; the init is
re-parented to the test process (a subreaper), which reaps it and reads its exit code.
``run`` in the foreground is driven from a pty of the test's own, as a user's terminal.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.spec import default_config
from runtime.terminal import receive_master
from tests.conftest import need, need_root

pytestmark = pytest.mark.root

BINARY = Path(sys.executable).with_name("podium-runtime")
TIMEOUT = 20.0
SIZE = {"height": 33, "width": 111}


class Engine:
    """What a conmon-style monitor does with podium-runtime, from the test process."""

    def __init__(self, tmp: Path, rootfs: Path, cgroup_parent: str) -> None:
        self.tmp = tmp
        self.rootfs = rootfs
        self.cgroup_parent = cgroup_parent
        self.ids: list[str] = []
        self.sock_path = tmp / "console.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.sock_path))
        self.listener.listen(4)
        self.listener.settimeout(TIMEOUT)

    def bundle(self, args: list[str], **process: Any) -> Path:
        path = self.tmp / f"bundle-{len(os.listdir(self.tmp))}"
        path.mkdir()
        config = default_config(args)
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        config["process"].update(process)
        (path / "config.json").write_text(json.dumps(config))
        return path

    def runtime(self, *args: str, check: bool = True) -> tuple[int, str]:
        """(exit code, stderr). stderr goes to a file: a created container holds the
        caller's stdio, so a pipe would stay open as long as it lives."""
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run([str(BINARY), "--root", str(self.tmp / "state"),
                                   "--cgroup-parent", self.cgroup_parent, *args],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, timeout=TIMEOUT)
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if check:
            assert proc.returncode == 0, f"podium-runtime {args}: {stderr}"
        return proc.returncode, stderr

    def receive(self) -> tuple[int, str]:
        conn, _ = self.listener.accept()
        with conn:
            return receive_master(conn)

    def close(self) -> None:
        self.listener.close()
        for cid in self.ids:
            if (self.tmp / "state" / cid).is_dir():
                self.runtime("delete", "--force", cid, check=False)


@pytest.fixture
def engine(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Engine]:
    need_root()
    need(BINARY.exists(), f"{BINARY} is not installed (make setup)")
    e = Engine(tmp_dir, busybox_rootfs.resolve(), cgroup_parent)
    yield e
    e.close()


class Terminal:
    """The master side of a pty: type into it, read until a pattern shows."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = b""

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern.encode())
        while True:
            match = regex.search(self.seen)
            if match:
                self.seen = self.seen[match.end():]
                return match
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the other side is gone
                    data = b""
                assert data, f"terminal closed before {pattern!r}; got {self.seen!r}"
                self.seen += data


def wait_exit(pid: int, timeout: float = TIMEOUT) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not end")


def check_shell(term: Terminal) -> None:
    term.expect(r"[#$] ")  # the prompt: an interactive shell, so stdin is a terminal
    term.type("echo hi-$((1+2))")
    term.expect(r"\bhi-3\b")
    term.type("tty")
    term.expect(r"\r\n/dev/pts/\d+\r\n")
    term.type("stty size")
    term.expect(rf"\r\n{SIZE['height']} {SIZE['width']}\r\n")


def test_create_sends_the_master_over_the_console_socket(engine: Engine) -> None:
    bundle = engine.bundle(["sh"], terminal=True, consoleSize=SIZE)
    engine.ids.append("tty1")
    pid_file = engine.tmp / "tty1.pid"
    engine.runtime("create", "--console-socket", str(engine.sock_path), "--pid-file",
                   str(pid_file), "--bundle", str(bundle), "tty1")
    master, name = engine.receive()
    assert re.fullmatch(r"/dev/pts/\d+", name), name
    pid = int(pid_file.read_text())
    term = Terminal(master)
    try:
        engine.runtime("start", "tty1")
        check_shell(term)
        term.type("ls -l /dev/console")  # the terminal also serves as /dev/console
        term.expect(r"136,")
        term.type("exit 5")
        assert wait_exit(pid) == 5
    finally:
        os.close(master)
    engine.runtime("delete", "tty1")


def test_exec_tty_sends_the_master_over_the_console_socket(engine: Engine) -> None:
    bundle = engine.bundle(["sleep", "1000"], consoleSize=SIZE)
    engine.ids.append("tty2")
    engine.runtime("create", "--bundle", str(bundle), "tty2")
    engine.runtime("start", "tty2")
    pid_file = engine.tmp / "exec.pid"
    engine.runtime("exec", "--tty", "--console-socket", str(engine.sock_path), "--detach",
                   "--pid-file", str(pid_file), "tty2", "sh")
    master, _ = engine.receive()
    pid = int(pid_file.read_text())
    term = Terminal(master)
    try:
        check_shell(term)
        term.type("exit 6")
        assert wait_exit(pid) == 6
    finally:
        os.close(master)
    engine.runtime("delete", "--force", "tty2")


def test_a_terminal_needs_a_console_socket_and_a_socket_a_terminal(engine: Engine) -> None:
    tty_bundle = engine.bundle(["sh"], terminal=True)
    plain = engine.bundle(["sh"])
    engine.ids += ["tty3", "tty4", "tty5"]
    for args, says in (
        (["create", "--bundle", str(tty_bundle), "tty3"], "needs a console socket"),
        (["create", "--console-socket", str(engine.sock_path), "--bundle", str(plain), "tty4"],
         "set it to true for a terminal"),
        (["create", "--console-socket", str(engine.tmp / "nobody.sock"), "--bundle",
          str(tty_bundle), "tty5"], "no such file or directory"),
        (["run", "--detach", "--bundle", str(tty_bundle), "tty3"], "cannot allocate tty"),
    ):
        code, stderr = engine.runtime(*args, check=False)
        lines = stderr.strip().splitlines()
        assert code == 1 and len(lines) == 1 and says in lines[0], (args, code, stderr)
    assert not (engine.tmp / "state").exists() or not os.listdir(engine.tmp / "state")


def test_run_in_the_foreground_relays_the_callers_terminal(engine: Engine) -> None:
    bundle = engine.bundle(["sh"], terminal=True)
    engine.ids.append("tty6")
    master, slave = os.openpty()
    # The caller's terminal: its size becomes the container's.
    from runtime.terminal import get_size, set_size

    set_size(slave, (SIZE["height"], SIZE["width"]))
    before = subprocess.run(["stty", "-g"], stdin=slave, capture_output=True, text=True).stdout
    proc = subprocess.Popen(
        [str(BINARY), "--root", str(engine.tmp / "state"), "--cgroup-parent",
         engine.cgroup_parent, "run", "--bundle", str(bundle), "tty6"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    term = Terminal(master)
    try:
        check_shell(term)
        term.type("exit 7")
        assert proc.wait(timeout=TIMEOUT) == 7
        after = subprocess.run(["stty", "-g"], stdin=slave, capture_output=True,
                               text=True).stdout
        assert after == before, "the caller's terminal was not restored"
        assert get_size(slave) == (SIZE["height"], SIZE["width"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    assert not (engine.tmp / "state" / "tty6").exists()


def _non_root(config: dict[str, Any]) -> None:
    config["process"]["user"] = {"uid": 1000, "gid": 1000}


def _user_namespace(config: dict[str, Any]) -> None:
    config["linux"]["namespaces"].append({"type": "user"})
    for key in ("uidMappings", "gidMappings"):
        config["linux"][key] = [{"containerID": 0, "hostID": 200000, "size": 65536}]


@pytest.mark.parametrize("edit", [_non_root, _user_namespace], ids=["non-root", "userns"])
def test_the_terminal_belongs_to_the_process(engine: Engine, tmp_dir: Path, edit: Any) -> None:
    os.chmod(tmp_dir, 0o755)  # a mapped root is no owner of the test's directory
    bundle = engine.bundle(["sh"], terminal=True, consoleSize=SIZE)
    config = json.loads((bundle / "config.json").read_text())
    edit(config)
    (bundle / "config.json").write_text(json.dumps(config))
    engine.ids.append("tty7")
    pid_file = engine.tmp / "tty7.pid"
    engine.runtime("create", "--console-socket", str(engine.sock_path), "--pid-file",
                   str(pid_file), "--bundle", str(bundle), "tty7")
    master, _ = engine.receive()
    term = Terminal(master)
    try:
        engine.runtime("start", "tty7")
        check_shell(term)
        uid = config["process"]["user"]["uid"]
        term.type("echo owner-$(stat -c %u $(tty))")
        term.expect(rf"\r\nowner-{uid}\r\n")
        term.type("exit 3")
        assert wait_exit(int(pid_file.read_text())) == 3
    finally:
        os.close(master)
    engine.runtime("delete", "tty7")


def test_exec_tty_in_the_foreground_relays_the_callers_terminal(engine: Engine) -> None:
    bundle = engine.bundle(["sleep", "1000"])
    engine.ids.append("tty8")
    engine.runtime("create", "--bundle", str(bundle), "tty8")
    engine.runtime("start", "tty8")
    master, slave = os.openpty()
    from runtime.terminal import set_size

    set_size(slave, (SIZE["height"], SIZE["width"]))
    proc = subprocess.Popen(
        [str(BINARY), "--root", str(engine.tmp / "state"), "--cgroup-parent",
         engine.cgroup_parent, "exec", "-t", "tty8", "sh"],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    term = Terminal(master)
    try:
        check_shell(term)
        term.type("exit 4")
        assert proc.wait(timeout=TIMEOUT) == 4
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    engine.runtime("delete", "--force", "tty8")
