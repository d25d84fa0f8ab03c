"""Terminals without root: fd passing over a socketpair, a pty taken by a forked
process as runc's init takes it, the foreground relay, and the options around them."""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from runtime.cli import main
from runtime.cli.process import exec_process_from_args
from runtime.create import check_console
from runtime.errors import ConfigError, SetupError
from runtime.spec import convert, default_config
from runtime.spec.model import Process, User
from runtime.terminal import (
    Console,
    ConsoleListener,
    connect_console,
    get_size,
    open_pty,
    receive_master,
    relay,
    send_master,
)


def _wait_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _read_until(fd: int, text: bytes) -> bytes:
    seen = b""
    while text not in seen:
        chunk = os.read(fd, 4096)
        assert chunk, f"end of terminal before {text!r}: {seen!r}"
        seen += chunk
    return seen


def test_a_master_passes_over_a_socketpair_with_the_slaves_name() -> None:
    left, right = socket.socketpair()
    master, slave, name = open_pty()
    try:
        send_master(left.fileno(), master, name)
        received, got_name = receive_master(right)
        assert got_name == name and name.startswith("/dev/pts/")
        # The fd received is the same pty: what the slave writes, it reads.
        os.write(slave, b"ping\n")
        assert b"ping" in os.read(received, 100)
        assert os.get_inheritable(received) is False
        os.close(received)
    finally:
        for fd in (master, slave):
            os.close(fd)
        left.close()
        right.close()


def test_receive_without_a_descriptor_is_an_error() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.send(b"/dev/pts/9")
        with pytest.raises(SetupError, match="sent no terminal"):
            receive_master(right)


def test_attach_makes_the_pty_the_controlling_terminal_and_stdio() -> None:
    """What the init does after setsid, in a forked child; the test is the engine."""
    with ConsoleListener() as listener:
        process = Process(args=("sh",), terminal=True, console_size=(33, 111))
        console = connect_console(listener.path, process)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                os.setsid()
                console.attach(None)
                ok = os.isatty(0) and os.isatty(1) and os.isatty(2) and \
                    os.tcgetpgrp(0) == os.getpid()
                os.write(1, f"ctty={ok} {os.ttyname(0)}\n".encode())
                code = 7
            finally:
                os._exit(code)
        os.close(console.fd)
        master = listener.receive()
    try:
        out = _read_until(master, b"\n")
        assert b"ctty=True /dev/pts/" in out
        assert get_size(master) == (33, 111)
    finally:
        os.close(master)
    assert _wait_code(pid) == 7


def test_connect_errors_are_one_line_naming_the_socket(tmp_path: Path) -> None:
    with pytest.raises(SetupError) as e:
        connect_console(tmp_path / "none.sock", Process(args=("sh",)))
    assert str(e.value) == f"console socket {tmp_path}/none.sock: no such file or directory"


def test_console_owner_and_size_come_from_the_process() -> None:
    with ConsoleListener() as listener:
        console = connect_console(listener.path, Process(args=("sh",), user=User(uid=1000),
                                                         console_size=(5, 6)))
        os.close(console.fd)
    assert isinstance(console, Console)
    assert (console.owner, console.size) == (1000, (5, 6))


def test_relay_copies_both_ways_and_returns_the_status() -> None:
    master, slave, _ = open_pty()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the container's process, talking on its terminal
        os.close(master)
        line = b""
        while not line.endswith(b"\n"):
            line += os.read(slave, 100)
        os.write(slave, b"got " + line)
        os._exit(9)
    os.close(slave)
    os.write(in_w, b"ping\n")
    os.close(in_w)
    try:
        status = relay(master, pid, stdin=in_r, stdout=out_w)
    finally:
        os.close(master)
        os.close(in_r)
        os.close(out_w)
    assert os.waitstatus_to_exitcode(status) == 9
    with os.fdopen(out_r, "rb") as f:
        assert b"got ping" in f.read()


# -- options -------------------------------------------------------------------------


def test_console_size_is_converted_and_checked() -> None:
    data = default_config(["sh"], terminal=True)
    data["process"]["consoleSize"] = {"height": 40, "width": 120}
    process = convert(data, Path("/b")).config.process
    assert process.terminal and process.console_size == (40, 120)
    data["process"]["consoleSize"] = {"height": 0, "width": 120}
    assert convert(data, Path("/b")).config.process.console_size is None
    data["process"]["consoleSize"] = {"height": 70000, "width": 1}
    with pytest.raises(ConfigError, match=r"process\.consoleSize\.height"):
        convert(data, Path("/b"))
    del data["process"]["consoleSize"]
    assert convert(data, Path("/b")).config.process.console_size is None


def test_a_terminal_needs_a_console_socket_and_a_socket_a_terminal() -> None:
    check_console(True, Path("/s"))
    check_console(False, None)
    with pytest.raises(ConfigError, match="needs a console socket"):
        check_console(True, None)
    with pytest.raises(ConfigError, match="set it to true"):
        check_console(False, Path("/s"))


def _exec_args(**kw: Any) -> argparse.Namespace:
    values: dict[str, Any] = dict(id="c", process=None, cwd=None, env=[], user=None, tty=False,
                                  args=["sh"])
    values.update(kw)
    return argparse.Namespace(**values)


def test_exec_tty_asks_for_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(default_config(["sleep", "9"])))
    state = SimpleNamespace(bundle=str(tmp_path), rootfs=str(tmp_path / "rootfs"))
    rt = cast(Any, SimpleNamespace(state=lambda _id: state))
    assert exec_process_from_args(rt, _exec_args(tty=True)).terminal
    assert not exec_process_from_args(rt, _exec_args()).terminal
    spec = tmp_path / "process.json"
    spec.write_text(json.dumps({"args": ["sh"], "cwd": "/", "terminal": True,
                                "consoleSize": {"height": 2, "width": 3}}))
    process = exec_process_from_args(rt, _exec_args(process=str(spec), args=[]))
    assert process.terminal and process.console_size == (2, 3)


def test_run_detached_with_a_terminal_needs_a_console_socket(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(default_config(["sh"], terminal=True)))
    code = main(["--root", str(tmp_path / "state"), "run", "--detach", "--bundle", str(bundle),
                 "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "cannot allocate tty if podium-runtime will detach without setting console socket" \
        in err[0]
