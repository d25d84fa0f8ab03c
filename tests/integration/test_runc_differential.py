"""The same bundle under runc and under ``podium-runtime``: what a caller sees must match.

Each tool gets its own ``--root`` in the test's directory, and its cgroups under the
session's test cgroup parent (``linux.cgroupsPath`` = ``/<parent>/<tool>-<id>``), so
the leak check watches both. Containers are created by the monitor of
tests/support/monitor.py, which reaps them as an engine's monitor does.

Tests parametrised over ``tool`` hold the same assertion for both. Tests taking
``both`` compare the two, and where podium deliberately differs (the OCI runtime
spec's MUSTs, which runc does not keep to the letter) they assert each tool's
behaviour and say why.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_root
from tests.integration.test_engine_contract import SLEEPER, runtime_binary
from tests.support.monitor import Engine, MonitorHandle
from tests.support.processes import wait_until_looping

pytestmark = pytest.mark.root

TOOLS = ("podium", "runc")
# The init ends on TERM and says so on USR1 (busybox sleep as PID 1 would ignore both).
SIGNALLED = ["sh", "-c", "trap 'echo usr1' USR1; trap 'exit 0' TERM; "
             "while true; do sleep 0.05; done"]


def make_engine(name: str, tmp: Path, rootfs: Path, cgroup_parent: str) -> Engine:
    return Engine(name, runtime_binary(name), tmp, rootfs.resolve(), cgroup_parent)


@pytest.fixture(params=TOOLS)
def tool(request: pytest.FixtureRequest, tmp_dir: Path, busybox_rootfs: Path,
         cgroup_parent: str) -> Iterator[Engine]:
    need_root()
    e = make_engine(request.param, tmp_dir, busybox_rootfs, cgroup_parent)
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def both(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[dict[str, Engine]]:
    need_root()
    engines = {name: make_engine(name, tmp_dir, busybox_rootfs, cgroup_parent)
               for name in TOOLS}
    try:
        yield engines
    finally:
        for e in engines.values():
            e.close()


def running(e: Engine, cid: str, args: list[str] | None = None) -> tuple[MonitorHandle, int]:
    mon = e.monitor(cid, e.bundle(cid, args or SLEEPER))
    created = mon.create(str(e.tmp / f"{e.name}-{cid}.pid"))
    assert created["code"] == 0, created
    mon.ok("start", cid)
    return mon, created["pid"]


def status_of(e: Engine, cid: str) -> str | None:
    result = e.call("state", cid)
    return str(result.json()["status"]) if result.code == 0 else None


def wait_output(mon: MonitorHandle, text: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while mon.call("output")["stdout"].count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} x{count} not in {mon.call('output')}"
        time.sleep(0.02)


# -- state ---------------------------------------------------------------------------


def test_state_has_the_same_shape_and_values_through_the_lifecycle(
        both: dict[str, Engine]) -> None:
    keys: dict[str, dict[str, set[str]]] = {}
    for name, e in both.items():
        bundle = e.bundle("life", SLEEPER)
        mon = e.monitor("life", bundle)
        pid = mon.create(str(e.tmp / f"{name}.pid"))["pid"]
        seen = {}
        seen["created"] = e.state("life")
        mon.ok("start", "life")
        seen["running"] = e.state("life")
        mon.ok("kill", "life", "KILL")
        assert mon.wait()["signal"] == 9
        seen["stopped"] = e.state("life")
        for status, state in seen.items():
            want_pid = 0 if status == "stopped" else pid
            assert (state["id"], state["status"], state["pid"], state["bundle"]) == \
                ("life", status, want_pid, str(bundle)), f"{name}: {state}"
            assert state["rootfs"] == str(e.rootfs)
        keys[name] = {status: set(state) for status, state in seen.items()}
        mon.ok("delete", "life")
    assert keys["podium"] == keys["runc"]


# -- run: exit codes and stdio -------------------------------------------------------


@pytest.mark.parametrize("script, kill, code", [
    ("true", None, 0), ("exit 3", None, 3), ("exec sleep 1000", "KILL", 137)],
    ids=["0", "3", "SIGKILL"])
def test_run_exits_with_the_programs_code(tool: Engine, script: str, kill: str | None,
                                          code: int) -> None:
    argv = tool.argv("run", "--bundle", str(tool.bundle("run", ["sh", "-c", script])), "run")
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            if kill is not None:
                # PID 1 cannot be SIGKILLed from inside its namespace: kill it from here.
                deadline = time.monotonic() + 10
                while status_of(tool, "run") != "running":
                    assert time.monotonic() < deadline, "run never got the container running"
                    time.sleep(0.02)
                assert tool.call("kill", "run", kill).code == 0
            assert proc.wait(30) == code
        finally:
            if proc.poll() is None:
                proc.kill()  # ours, by PID; the fixture forces the container away
                proc.wait()
    assert not (tool.root / "run").exists()


def test_run_passes_stdout_and_stderr_through(tool: Engine) -> None:
    bundle = tool.bundle("stdio", ["sh", "-c", "echo to-out; echo to-err >&2"])
    result = tool.call("run", "--bundle", str(bundle), "stdio")
    assert (result.code, result.out, result.err) == (0, "to-out\n", "to-err\n"), str(result)


# -- kill ----------------------------------------------------------------------------


def test_kill_takes_signal_names_with_or_without_sig_and_numbers(tool: Engine) -> None:
    mon, pid = running(tool, "sig", SIGNALLED)
    wait_until_looping(pid)  # sh has installed its traps
    for n, sig in enumerate(("USR1", "SIGUSR1", "10"), start=1):
        mon.ok("kill", "sig", sig)
        wait_output(mon, "usr1\n", n)
    assert mon.runtime("kill", "sig", "BOGUS")["code"] != 0
    mon.ok("kill", "sig")  # TERM by default
    assert mon.wait() == {"exited": True, "exitCode": 0, "signal": None}
    assert mon.runtime("kill", "sig", "KILL")["code"] != 0, "kill of a stopped container"
    mon.ok("delete", "sig")


# -- delete --------------------------------------------------------------------------


def test_delete_of_a_running_container_without_force_fails_and_changes_nothing(
        tool: Engine) -> None:
    mon, pid = running(tool, "busy")
    reply = mon.runtime("delete", "busy")
    assert reply["code"] != 0
    # Messages differ: runc says "cannot delete container busy that is not stopped:
    # running", podium "container busy is running: cannot delete it (stop it first,
    # or use --force)". Both name the status.
    assert "running" in reply["err"], reply
    state = tool.state("busy")
    assert (state["status"], state["pid"]) == ("running", pid)
    mon.ok("delete", "--force", "busy")
    assert mon.wait()["signal"] == 9


def test_delete_of_a_created_container_without_force(both: dict[str, Engine]) -> None:
    # Deliberate difference. The OCI runtime spec: "Attempting to delete a container
    # that is not stopped MUST have no effect on the container and MUST generate an
    # error." podium keeps to it; runc 1.1 deletes a created container (killing its
    # init) without --force.
    mons = {}
    for name, e in both.items():
        mons[name] = mon = e.monitor("fresh", e.bundle("fresh", SLEEPER))
        assert mon.create(str(e.tmp / f"{name}.pid"))["code"] == 0
    podium = mons["podium"].runtime("delete", "fresh")
    assert podium["code"] != 0 and "created" in podium["err"], podium
    assert both["podium"].state("fresh")["status"] == "created"
    mons["podium"].ok("delete", "--force", "fresh")

    mons["runc"].ok("delete", "fresh")
    assert both["runc"].call("state", "fresh").code != 0
    for mon in mons.values():
        assert mon.wait()["signal"] == 9


# -- errors --------------------------------------------------------------------------


def test_errors_exit_non_zero_and_leave_nothing(tool: Engine) -> None:
    missing = tool.call("create", "--bundle", str(tool.tmp / "no-such-bundle"), "nob")
    assert missing.code != 0 and "no such" in missing.err.lower(), str(missing)

    bad = tool.tmp / f"{tool.name}-bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": 5}))
    assert tool.call("create", "--bundle", str(bad), "bad").code != 0

    for verb in (("start",), ("state",), ("kill",), ("delete",), ("pause",), ("ps",)):
        result = tool.call(*verb, "unknown")
        assert result.code != 0 and "does not exist" in result.err, str(result)
    for cid in ("nob", "bad"):
        assert tool.call("state", cid).code != 0
    assert not tool.root.exists() or not list(tool.root.iterdir())


def test_delete_force_of_an_unknown_container(both: dict[str, Engine]) -> None:
    # Deliberate difference. The spec: "Attempting to delete a container that does not
    # exist MUST generate an error"; podium does, with or without --force. runc 1.1's
    # --force makes it succeed (after removing any half-made state directory).
    podium = both["podium"].call("delete", "--force", "ghost")
    assert podium.code != 0 and "does not exist" in podium.err, str(podium)
    assert both["runc"].call("delete", "--force", "ghost").code == 0


def test_a_duplicate_id_is_refused_and_the_first_container_kept(tool: Engine) -> None:
    mon, pid = running(tool, "twin")
    second = tool.call("create", "--bundle", str(tool.bundle("twin", SLEEPER)), "twin")
    assert second.code != 0 and "exists" in second.err, str(second)
    state = tool.state("twin")
    assert (state["status"], state["pid"]) == ("running", pid)
    mon.ok("delete", "--force", "twin")
    assert mon.wait()["signal"] == 9


def test_a_missing_program_fails_create_naming_the_cause(tool: Engine) -> None:
    # runc 1.1 checks the program during create too (not only at start), so both agree.
    mon = tool.monitor("noprog", tool.bundle("noprog", ["/nope"]))
    created = mon.create()
    assert created["code"] != 0 and "no such file or directory" in created["err"], created
    assert tool.call("state", "noprog").code != 0


# -- list, ps, exec, --version -------------------------------------------------------


def test_list_json_has_the_same_shape(both: dict[str, Engine]) -> None:
    # With no container runc prints `null` and podium `[]`; both read as "none" to a
    # caller that decodes a list (go-runc, crictl), so the difference is kept.
    assert both["runc"].call("list", "--format", "json").json() is None
    assert both["podium"].call("list", "--format", "json").json() == []
    entries: dict[str, dict[str, Any]] = {}
    for name, e in both.items():
        mon, pid = running(e, "listed")
        listed = e.call("list", "--format", "json").json()
        assert len(listed) == 1, listed
        entries[name] = entry = listed[0]
        assert (entry["id"], entry["status"], entry["pid"]) == ("listed", "running", pid)
        assert entry["owner"] == "root"
        assert e.call("list", "--quiet").out == "listed\n"
        mon.ok("delete", "--force", "listed")
        assert mon.wait()["signal"] == 9
    assert set(entries["podium"]) == set(entries["runc"])


def test_ps_json_lists_the_init_and_exec_processes(tool: Engine) -> None:
    mon, pid = running(tool, "ps")
    assert tool.call("ps", "--format", "json", "ps").json() == [pid]
    pid_file = tool.tmp / "exec.pid"
    mon.ok("exec", "--detach", "--pid-file", str(pid_file), "ps", "sleep", "999")
    exec_pid = int(pid_file.read_text())
    assert sorted(tool.call("ps", "--format", "json", "ps").json()) == sorted([pid, exec_pid])
    mon.ok("delete", "--force", "ps")
    assert mon.wait()["signal"] == 9


@pytest.mark.parametrize("script, code", [("true", 0), ("exit 5", 5),
                                          ("kill -9 $$", 137)])
def test_exec_exits_with_the_programs_code(tool: Engine, script: str, code: int) -> None:
    mon, _ = running(tool, "ex")
    reply = mon.runtime("exec", "ex", "sh", "-c", script)
    assert reply["code"] == code, reply
    mon.ok("delete", "--force", "ex")
    assert mon.wait()["signal"] == 9


def test_exec_of_a_missing_program(both: dict[str, Engine]) -> None:
    # Both fail naming the cause, which callers map to 127; the codes differ: runc
    # exits 255, podium 1 as for any other runtime error.
    codes = {}
    for name, e in both.items():
        mon, _ = running(e, "exm")
        reply = mon.runtime("exec", "exm", "/nope")
        assert "no such file or directory" in reply["err"], reply
        codes[name] = reply["code"]
        mon.ok("delete", "--force", "exm")
        assert mon.wait()["signal"] == 9
    assert codes == {"runc": 255, "podium": 1}


def test_version_names_the_runtime_and_the_spec(tool: Engine) -> None:
    result = tool.call("--version")
    assert result.code == 0, str(result)
    lines = result.out.splitlines()
    binary = Path(tool.binary).name
    assert re.match(rf"{re.escape(binary)} version \d+\.\d+\.\d+", lines[0]), lines
    spec = [line for line in lines if line.startswith("spec: ")]
    assert len(spec) == 1 and re.fullmatch(r"spec: 1\.\d+\.\d+(-dev)?", spec[0]), lines

