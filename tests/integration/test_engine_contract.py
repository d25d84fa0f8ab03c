"""The contract a container engine relies on, proved with a monitor like theirs.

Engines (podman with conmon, containerd with its shim) never keep the container's
init as their own child: a small monitor, a child subreaper that owns the
container's stdio pipes, runs ``create``, reads the pid file, runs ``start`` and
reaps the init once ``create`` has exited and left it behind. tests/support/monitor.py
is such a monitor; these tests drive it with ``podium-runtime`` and, as the
reference, with runc, and expect the same from both.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import need, need_root
from tests.support.monitor import Engine, monitor_env

pytestmark = pytest.mark.root

PODIUM = Path(sys.executable).with_name("podium-runtime")
SLEEPER = ["sleep", "1000"]


def runtime_binary(name: str) -> str:
    if name == "runc":
        runc = shutil.which("runc")
        need(runc is not None, "needs runc (make setup installs it)")
        assert runc is not None
        return runc
    need(PODIUM.exists(), f"{PODIUM} is not installed (make setup)")
    return str(PODIUM)


@pytest.fixture(params=["podium", "runc"])
def engine(request: pytest.FixtureRequest, tmp_dir: Path, busybox_rootfs: Path,
           cgroup_parent: str) -> Iterator[Engine]:
    need_root()
    e = Engine(request.param, runtime_binary(request.param), tmp_dir,
               busybox_rootfs.resolve(), cgroup_parent)
    try:
        yield e
    finally:
        e.close()


def ns_pid(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def nspids(pid: int) -> list[int]:
    """The process's PID in each nested PID namespace, outermost first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(n) for n in line.split()[1:]]
    raise AssertionError(f"no NSpid in /proc/{pid}/status")


# -- the init's end and stdio come to the monitor ------------------------------------


# The container's PID 1 cannot SIGKILL itself (the kernel drops signals its own
# namespace sends it without a handler), so the killed case is killed from outside.
@pytest.mark.parametrize("script, kill, code, sig", [
    ("echo out; echo err >&2; exit 3", None, 3, None),
    ("echo out; echo err >&2; exec sleep 1000", "9", 137, 9),
], ids=["exit-3", "killed-by-9"])
def test_the_monitor_reaps_the_init_and_gets_its_status_and_stdio(
        engine: Engine, script: str, kill: str | None, code: int, sig: int | None) -> None:
    mon = engine.monitor("exits", engine.bundle("exits", ["sh", "-c", script]))
    created = mon.create("init.pid", cwd=engine.tmp)
    assert created["code"] == 0, created
    pid = created["pid"]
    mon.ok("start", "exits")
    if kill is not None:
        deadline = time.monotonic() + 10
        while mon.call("output")["stderr"] != "err\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        mon.ok("kill", "exits", kill)
    status = mon.wait()
    assert status == {"exited": True, "exitCode": code, "signal": sig}
    assert engine.state("exits")["status"] == "stopped"
    mon.ok("delete", "exits")
    result = mon.quit()
    assert result["stdout"] == "out\n" and result["stderr"] == "err\n", result
    assert pid in result["reaped"], "the init's status went to someone else"
    assert not (engine.root / "exits").exists()


def test_the_init_reads_the_monitors_stdin_pipe(engine: Engine) -> None:
    mon = engine.monitor("cat", engine.bundle("cat", ["cat"]))
    assert mon.create("init.pid", cwd=engine.tmp, stdin="through the pipe\n")["code"] == 0
    mon.ok("start", "cat")
    assert mon.wait() == {"exited": True, "exitCode": 0, "signal": None}
    mon.ok("delete", "cat")
    assert mon.quit()["stdout"] == "through the pipe\n"


# -- create: exits 0, pid file written, init blocked and left to the monitor ----------


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_create_exits_leaving_a_blocked_init_whose_parent_is_the_monitor(
        engine: Engine, relative: bool) -> None:
    cwd = engine.tmp / "caller-cwd"
    cwd.mkdir()
    pid_file = "init.pid" if relative else str(engine.tmp / "abs" / "init.pid")
    if not relative:
        (engine.tmp / "abs").mkdir()
    mon = engine.monitor("blocked", engine.bundle("blocked", ["sh", "-c", "echo started"]))
    created = mon.create(pid_file, cwd=cwd)
    assert created["code"] == 0, created
    written = (cwd / "init.pid") if relative else Path(pid_file)
    pid = int(written.read_text())
    assert pid == created["pid"]
    init = psutil.Process(pid)
    assert init.ppid() == mon.pid, "create left a process between the monitor and the init"
    state = engine.state("blocked")
    assert (state["status"], state["pid"]) == ("created", pid)
    time.sleep(0.2)
    assert mon.call("output")["stdout"] == "", "the program ran before start"
    assert init.status() != psutil.STATUS_ZOMBIE
    mon.ok("start", "blocked")
    assert mon.wait() == {"exited": True, "exitCode": 0, "signal": None}
    mon.ok("delete", "blocked")
    assert mon.quit()["stdout"] == "started\n"


# -- kill and delete ---------------------------------------------------------------


def test_kill_15_does_nothing_to_sleep_as_pid_1_then_9_ends_it(engine: Engine) -> None:
    mon = engine.monitor("sleeper", engine.bundle("sleeper", SLEEPER))
    assert mon.create()["code"] == 0
    mon.ok("start", "sleeper")
    # A PID namespace's init gets only the signals it has a handler for; sleep has
    # none for TERM, so the kernel drops it.
    mon.ok("kill", "sleeper", "15")
    assert mon.wait(0.5)["exited"] is False
    assert engine.state("sleeper")["status"] == "running"
    mon.ok("kill", "sleeper", "9")
    assert mon.wait() == {"exited": True, "exitCode": 137, "signal": 9}
    assert engine.state("sleeper")["status"] == "stopped"
    mon.ok("delete", "sleeper")
    assert not (engine.root / "sleeper").exists()


def test_delete_force_ends_a_running_container(engine: Engine) -> None:
    mon = engine.monitor("doomed", engine.bundle("doomed", SLEEPER))
    pid = mon.create()["pid"]
    mon.ok("start", "doomed")
    mon.ok("delete", "--force", "doomed")
    assert mon.wait() == {"exited": True, "exitCode": 137, "signal": 9}
    assert engine.call("state", "doomed").code != 0
    assert not (engine.root / "doomed").exists()
    assert pid in mon.quit()["reaped"]


# -- exec, detached, from a process.json -----------------------------------------------


def test_exec_detached_with_process_json_runs_in_the_containers_pid_namespace(
        engine: Engine) -> None:
    mon = engine.monitor("host", engine.bundle("host", SLEEPER))
    init_pid = mon.create()["pid"]
    mon.ok("start", "host")
    process = {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sleep", "999"],
               "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/"}
    process_json = engine.tmp / "process.json"
    process_json.write_text(json.dumps(process))
    pid_file = engine.tmp / "exec.pid"
    mon.ok("exec", "--process", str(process_json), "--detach", "--pid-file", str(pid_file),
           "host")
    pid = int(pid_file.read_text())
    proc = psutil.Process(pid)
    assert proc.cmdline() == ["sleep", "999"]
    assert ns_pid(pid) == ns_pid(init_pid)
    assert nspids(init_pid)[-1] == 1 and nspids(pid)[-1] != 1
    # The runtime's exec has exited: its process, like the init, is the monitor's.
    assert proc.ppid() == mon.pid
    assert pid in json.loads(engine.call("ps", "--format", "json", "host").out)
    mon.ok("delete", "--force", "host")
    assert mon.wait()["signal"] == 9
    reaped = mon.quit()["reaped"]
    assert init_pid in reaped and pid in reaped


# -- errors go to --log as JSON lines -------------------------------------------------


def test_log_json_carries_the_create_error_of_a_missing_program(engine: Engine) -> None:
    log = engine.tmp / "runtime.log"
    mon = engine.monitor("nobin", engine.bundle("nobin", ["/nope"]),
                         "--log", str(log), "--log-format", "json")
    created = mon.create()
    assert created["code"] != 0 and created["pid"] is None
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    errors = [entry for entry in lines if entry.get("level") == "error"]
    assert errors, f"no error in {log}: {lines}"
    for entry in lines:
        assert {"level", "msg", "time"} <= set(entry), entry
        datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert any("no such file or directory" in e["msg"] for e in errors), errors
    assert engine.call("state", "nobin").code != 0
    assert not (engine.root / "nobin").exists()
    mon.quit()


# -- a terminal through --console-socket -----------------------------------------------


def test_a_tty_comes_to_the_caller_through_the_console_socket(engine: Engine) -> None:
    def terminal(config: dict[str, Any]) -> None:
        config["process"]["terminal"] = True

    mon = engine.monitor("tty", engine.bundle("tty", ["sh"], terminal))
    path = engine.tmp / "console.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        # create connects, sends the pty's master and goes on; the backlog holds the
        # connection until we accept it.
        created = mon.create(create_args=("--console-socket", str(path)))
        assert created["code"] == 0, created
        listener.settimeout(10)
        conn, _ = listener.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    assert len(fds) == 1
    master = fds[0]
    try:
        assert os.isatty(master)
        mon.ok("start", "tty")
        os.write(master, b"echo typed-$((40+2)); exit 7\n")
        seen = b""
        deadline = time.monotonic() + 10
        while b"typed-42" not in seen:  # the echo of what we typed shows $((40+2))
            assert time.monotonic() < deadline, f"no output on the terminal: {seen!r}"
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # EIO: the slave side is gone
                    break
        assert b"typed-42" in seen, seen
        assert mon.wait() == {"exited": True, "exitCode": 7, "signal": None}
    finally:
        os.close(master)
    mon.ok("delete", "tty")
    assert mon.quit()["stdout"] == "", "with a terminal, nothing goes to the monitor's pipes"


# -- the monitor unattended -------------------------------------------------------------


def test_an_unattended_monitor_writes_the_exit_and_output_to_its_result_file(
        engine: Engine) -> None:
    bundle = engine.bundle("alone", ["sh", "-c", "echo alone; exit 4"])
    result = engine.tmp / "alone.json"
    subprocess.run([sys.executable, "-m", "tests.support.monitor", "--oneshot", "--id", "alone",
                    "--bundle", str(bundle), "--result", str(result), "--", *engine.argv()],
                   cwd=engine.tmp, env=monitor_env(), check=True, timeout=60)
    data = json.loads(result.read_text())
    assert (data["exitCode"], data["signal"], data["stdout"]) == (4, None, "alone\n"), data
    assert data["pid"] in data["reaped"]
    assert not (engine.root / "alone").exists()
