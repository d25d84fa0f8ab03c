"""``podium-runtime``, the command line, driven as runc's callers drive it: the real
binary in a subprocess, as root, on the real kernel.

Every call goes through ``Cli.call`` with ``--root`` under the test's temporary
directory and ``--cgroup-parent`` the session's test parent. stdout and stderr go to
files, not pipes: ``create`` hands the caller's stdio to the container's init, so a
pipe would stay open (and ``communicate`` would wait) as long as the container lives.

pytest is a child subreaper (tests/conftest.py), so a container whose caller exits
is re-parented to the test process, which reaps it once it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from runtime.spec import default_config
from tests.conftest import need, need_root
from tests.support.monitor import Result
from tests.support.processes import wait_until_looping

pytestmark = pytest.mark.root

BINARY = Path(sys.executable).with_name("podium-runtime")
CGROUP_ROOT = Path("/sys/fs/cgroup")
TIMEOUT = 30.0
SLEEPER = ["sleep", "1000"]
# busybox sleep as PID 1 ignores TERM (the kernel drops signals a namespace's init has
# no handler for): this init ends on TERM, as a real service would.
TERMINABLE = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]


@dataclass
class Cli:
    tmp: Path
    rootfs: Path
    cgroup_parent: str
    _bundles: int = 0
    used_ids: set[str] = field(default_factory=set)

    @property
    def state_root(self) -> Path:
        return self.tmp / "state"

    def argv(self, *args: str) -> list[str]:
        return [str(BINARY), "--root", str(self.state_root),
                "--cgroup-parent", self.cgroup_parent, *args]

    def call(self, *args: str, timeout: float = TIMEOUT, cwd: Path | None = None) -> Result:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(self.argv(*args), stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=err, timeout=timeout, cwd=cwd)
            out.seek(0)
            err.seek(0)
            return Result(["podium-runtime", *args], proc.returncode,
                          out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"))

    def ok(self, *args: str, **kw: Any) -> Result:
        result = self.call(*args, **kw)
        assert result.code == 0, f"expected success:\n{result}"
        return result

    def fails(self, *args: str, says: tuple[str, ...] = (), **kw: Any) -> Result:
        """The call exits non-zero with a one-line error on stderr holding each of ``says``."""
        result = self.call(*args, **kw)
        assert result.code != 0, f"expected a failure:\n{result}"
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, f"expected a one-line error:\n{result}"
        for text in says:
            assert text in lines[0], f"expected {text!r} in the error:\n{result}"
        return result

    def bundle(self, args: list[str], edit: Callable[[dict[str, Any]], None] | None = None
               ) -> Path:
        self._bundles += 1
        path = self.tmp / f"bundle{self._bundles}"
        path.mkdir()
        config = default_config(args)
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        if edit is not None:
            edit(config)
        (path / "config.json").write_text(json.dumps(config))
        return path

    def create(self, cid: str, bundle: Path, *extra: str) -> Result:
        self.used_ids.add(cid)
        return self.ok("create", "--bundle", str(bundle), *extra, cid)

    def running(self, cid: str, args: list[str] | None = None) -> dict[str, Any]:
        """create + start a container; returns its state."""
        self.create(cid, self.bundle(args or SLEEPER))
        self.ok("start", cid)
        state = self.state(cid)
        assert state["status"] == "running", state
        return state

    def state(self, cid: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("state", cid).json()
        return data

    def wait_status(self, cid: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            reap_zombies()
            state = self.state(cid)
            if state["status"] == status or time.monotonic() > deadline:
                assert state["status"] == status, f"{cid} is {state['status']}, not {status}"
                return state
            time.sleep(0.05)

    # -- what exists on the host ---------------------------------------------------

    def state_entries(self) -> set[str]:
        return set(os.listdir(self.state_root)) if self.state_root.is_dir() else set()

    def cgroups(self) -> set[str]:
        """Every directory below the cgroup parent, in every hierarchy."""
        found = set()
        for hierarchy in CGROUP_ROOT.iterdir():
            base = hierarchy / self.cgroup_parent
            if base.is_dir():
                found |= {str(base / d) for d in os.listdir(base) if (base / d).is_dir()}
        return found

    def footprint(self) -> tuple[set[str], set[str]]:
        return self.state_entries(), self.cgroups()

    def assert_gone(self, cid: str) -> None:
        assert cid not in self.state_entries(), f"state of {cid} left in {self.state_root}"
        left = [c for c in self.cgroups() if Path(c).name == cid]
        assert not left, f"cgroups of {cid} left: {left}"


@pytest.fixture
def cli(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Cli]:
    need_root()
    need(BINARY.exists(), f"{BINARY} is not installed (make setup)")
    need(CGROUP_ROOT.is_dir(), "needs /sys/fs/cgroup")
    c = Cli(tmp_dir, busybox_rootfs.resolve(), cgroup_parent)
    yield c
    # Whatever a test left (failed halfway, say): force it away.
    for cid in c.state_entries() | c.used_ids:
        if cid and "/" not in cid and len(cid) < 256 and (c.state_root / cid).is_dir():
            c.call("delete", "--force", cid)


def reap_zombies() -> None:
    """Do a subreaper's job, as an engine's monitor does: a container's init cannot end
    while processes of its PID namespace re-parented to us wait to be reaped.

    Only zombies are reaped, by PID, so no subprocess still being waited for is touched."""
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError):
            pass


def alive(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
        return status != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- spec ---------------------------------------------------------------------------


def test_spec_writes_a_config_create_accepts_and_never_overwrites(cli: Cli) -> None:
    bundle = cli.tmp / "specbundle"
    bundle.mkdir()
    cli.ok("spec", cwd=bundle)
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] and config["root"]["path"] == "rootfs"
    (bundle / "rootfs").symlink_to(cli.rootfs)
    cli.create("fromspec", bundle)
    assert cli.state("fromspec")["status"] == "created"
    cli.ok("delete", "--force", "fromspec")
    cli.assert_gone("fromspec")

    before = (bundle / "config.json").read_text()
    cli.fails("spec", cwd=bundle, says=("already exists",))
    assert (bundle / "config.json").read_text() == before


# -- lifecycle ----------------------------------------------------------------------


@pytest.mark.parametrize("relative", [True, False], ids=["relative-pid-file", "absolute-pid-file"])
def test_create_start_kill_delete(cli: Cli, relative: bool) -> None:
    bundle = cli.bundle(TERMINABLE)
    pid_file = "init.pid" if relative else str(cli.tmp / "abs" / "init.pid")
    if not relative:
        (cli.tmp / "abs").mkdir()
    # A relative pid file is relative to the caller's working directory.
    cli.used_ids.add("life")
    cli.ok("create", "--bundle", str(bundle), "--pid-file", pid_file, "life", cwd=cli.tmp)

    state = cli.state("life")
    assert state["status"] == "created"
    assert state["id"] == "life" and state["bundle"] == str(bundle)
    pid = state["pid"]
    assert pid > 0 and alive(pid)
    written = (cli.tmp / pid_file).read_text() if relative else Path(pid_file).read_text()
    assert int(written) == pid
    # Created: the init exists but has not run the user's program yet.
    assert "sh" not in psutil.Process(pid).cmdline()[:1]

    cli.ok("start", "life")
    state = cli.state("life")
    assert state["status"] == "running" and state["pid"] == pid
    assert psutil.Process(pid).cmdline()[:2] == ["sh", "-c"]

    wait_until_looping(pid)  # the TERM trap is set
    cli.ok("kill", "life")  # TERM by default
    state = cli.wait_status("life", "stopped")
    assert not alive(pid)

    cli.ok("delete", "life")
    cli.assert_gone("life")
    cli.fails("state", "life", says=("life", "does not exist"))


@pytest.mark.parametrize("sig", ["KILL", "SIGKILL", "9"])
def test_kill_signal_forms(cli: Cli, sig: str) -> None:
    pid = cli.running("k", SLEEPER)["pid"]
    cli.ok("kill", "k", sig)
    cli.wait_status("k", "stopped")
    assert not alive(pid)
    cli.ok("delete", "k")
    cli.assert_gone("k")


def test_kill_term_then_kill_of_a_container_that_ignores_term(cli: Cli) -> None:
    # As engines stop a container: TERM, a grace period, then KILL.
    pid = cli.running("stubborn", SLEEPER)["pid"]
    cli.ok("kill", "stubborn", "15")
    time.sleep(0.3)
    assert cli.state("stubborn")["status"] == "running"  # sleep as PID 1 ignores TERM
    cli.ok("kill", "stubborn", "9")
    cli.wait_status("stubborn", "stopped")
    assert not alive(pid)
    cli.ok("delete", "stubborn")


def test_run_passes_stdout_through(cli: Cli) -> None:
    bundle = cli.bundle(["sh", "-c", "echo hello from $(hostname); echo oops >&2"])
    cli.used_ids.add("echo")
    result = cli.call("run", "--bundle", str(bundle), "echo")
    assert result.code == 0, str(result)
    assert result.out == "hello from podium\n", str(result)
    assert "oops" in result.err, str(result)
    cli.assert_gone("echo")  # run deletes what it ran


def test_run_exits_with_the_containers_code(cli: Cli) -> None:
    cli.used_ids.add("three")
    result = cli.call("run", "--bundle", str(cli.bundle(["sh", "-c", "exit 3"])), "three")
    assert result.code == 3, str(result)
    cli.assert_gone("three")


def test_run_of_a_signal_killed_container_exits_128_plus_n(cli: Cli) -> None:
    bundle = cli.bundle(SLEEPER)
    cli.used_ids.add("killed")
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cli.argv("run", "--bundle", str(bundle), "killed"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 10
            while True:
                state = cli.call("state", "killed")
                if state.code == 0 and state.json()["status"] == "running":
                    break
                assert proc.poll() is None and time.monotonic() < deadline, str(state)
                time.sleep(0.05)
            cli.ok("kill", "killed", "KILL")
            code = proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        assert code == 128 + signal.SIGKILL, out.read()
    cli.assert_gone("killed")


def test_container_survives_its_caller(cli: Cli) -> None:
    bundle = cli.bundle(SLEEPER)
    cli.used_ids.add("orphan")
    create = " ".join(cli.argv("create", "--bundle", str(bundle), "orphan"))
    start = " ".join(cli.argv("start", "orphan"))
    caller = subprocess.Popen(["sh", "-c", f"{create} && {start}"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert caller.wait(timeout=TIMEOUT) == 0
    state = cli.state("orphan")
    assert state["status"] == "running"
    pid = state["pid"]
    time.sleep(0.2)
    assert alive(pid)
    # Its caller is gone: the init now belongs to the nearest subreaper, this test.
    assert psutil.Process(pid).ppid() == os.getpid()
    cli.ok("kill", "orphan", "KILL")
    cli.wait_status("orphan", "stopped")
    cli.ok("delete", "orphan")
    cli.assert_gone("orphan")


# -- exec -----------------------------------------------------------------------------


def test_exec_shares_the_pid_namespace_and_passes_the_exit_code(cli: Cli) -> None:
    cli.running("host", SLEEPER)
    result = cli.ok("exec", "host", "--", "ps")
    rows = [line.split(None, 2) for line in result.out.strip().splitlines()[1:]]
    by_pid = {int(r[0]): r[2] for r in rows}
    assert by_pid.get(1) == "sleep 1000", f"PID 1 is not the init:\n{result}"
    # Only the container's processes: the init and ps itself.
    assert len(by_pid) == 2, str(result)
    cmdline = cli.ok("exec", "host", "--", "cat", "/proc/1/cmdline").out
    assert cmdline.split("\0")[:2] == ["sleep", "1000"]

    assert cli.call("exec", "host", "--", "sh", "-c", "exit 7").code == 7
    cli.ok("delete", "--force", "host")
    cli.assert_gone("host")


def test_exec_process_json_detached_with_pid_file(cli: Cli) -> None:
    init = cli.running("host2", SLEEPER)["pid"]
    process = {"args": ["sleep", "777"], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": ["PATH=/bin:/usr/bin"]}
    (cli.tmp / "process.json").write_text(json.dumps(process))
    pid_file = cli.tmp / "exec.pid"
    cli.ok("exec", "--process", str(cli.tmp / "process.json"), "--detach",
           "--pid-file", str(pid_file), "host2", timeout=10)
    pid = int(pid_file.read_text())
    assert pid != init and alive(pid)
    assert psutil.Process(pid).cmdline() == ["sleep", "777"]
    assert pid in cli.ok("ps", "--format", "json", "host2").json()
    cli.ok("kill", "host2", "KILL")
    cli.wait_status("host2", "stopped")
    cli.ok("delete", "host2")
    assert not alive(pid)
    cli.assert_gone("host2")


# -- inspection -------------------------------------------------------------------------


def test_list_ps_pause_resume_events(cli: Cli) -> None:
    state = cli.running("lister", SLEEPER)
    pid = state["pid"]

    table = cli.ok("list").out.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    row = next(line.split() for line in table[1:] if line.split()[:1] == ["lister"])
    assert row[1:3] == [str(pid), "running"]
    listed = {c["id"]: c for c in cli.ok("list", "--format", "json").json()}
    assert listed["lister"]["status"] == "running" and listed["lister"]["pid"] == pid

    assert pid in cli.ok("ps", "--format", "json", "lister").json()
    ps_table = cli.ok("ps", "lister").out
    assert any(line.split()[:1] == [str(pid)] and "sleep 1000" in line
               for line in ps_table.splitlines()), ps_table

    cli.ok("pause", "lister")
    assert cli.state("lister")["status"] == "paused"
    cli.ok("resume", "lister")
    assert cli.state("lister")["status"] == "running"

    event = cli.ok("events", "--stats", "lister").json()
    assert event["type"] == "stats" and event["id"] == "lister"
    data = event["data"]
    assert data["pids_current"] >= 1, event
    assert data["memory_current"] > 0, event

    cli.ok("delete", "--force", "lister")
    cli.assert_gone("lister")
    assert cli.ok("list", "--format", "json").json() == []


def test_features_and_version(cli: Cli) -> None:
    features = cli.ok("features").json()
    assert features["ociVersionMin"] and features["ociVersionMax"]
    assert "pid" in features["linux"]["namespaces"]
    assert "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    lines = cli.ok("--version").out.splitlines()
    assert lines[0].startswith("podium-runtime version "), lines
    assert any(line.startswith("spec: 1.") for line in lines), lines


# -- bad input -----------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


BAD_CONFIGS: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, ...]]] = {
    "args-a-string": (_set("process.args", "sleep 1000"), ("process.args",)),
    "unknown-capability": (
        lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NOPE"),
        ("CAP_NOPE",)),
    "unknown-namespace": (
        lambda c: c["linux"]["namespaces"].append({"type": "nope"}),
        ("linux.namespaces", "nope")),
    "missing-rootfs": (_set("root.path", "/nonexistent-podium-rootfs"),
                       ("/nonexistent-podium-rootfs",)),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_and_leaves_nothing(cli: Cli, case: str) -> None:
    edit, says = BAD_CONFIGS[case]
    bundle = cli.bundle(SLEEPER, edit)
    before = cli.footprint()
    cli.used_ids.add("bad")
    cli.fails("create", "--bundle", str(bundle), "bad", says=says)
    assert cli.footprint() == before
    cli.assert_gone("bad")


def test_malformed_json_is_refused(cli: Cli) -> None:
    bundle = cli.tmp / "malformed"
    bundle.mkdir()
    (bundle / "config.json").write_text('{"ociVersion": "1.2.0", "process": {')
    before = cli.footprint()
    cli.used_ids.add("bad")
    cli.fails("create", "--bundle", str(bundle), "bad", says=("config.json", "invalid JSON"))
    assert cli.footprint() == before


def test_missing_bundle_is_refused(cli: Cli) -> None:
    before = cli.footprint()
    cli.used_ids.add("bad")
    missing = str(cli.tmp / "no-such-bundle")
    cli.fails("create", "--bundle", missing, "bad", says=(missing, "no such"))
    assert cli.footprint() == before


@pytest.mark.parametrize("cid,says", [
    ("", ("empty",)),
    ("a/b", ("'a/b'", "invalid")),
    ("..", ("'..'", "invalid")),
    ("x" * 2000, ("2000 characters",)),
], ids=["empty", "slash", "dotdot", "too-long"])
def test_bad_ids_are_refused(cli: Cli, cid: str, says: tuple[str, ...]) -> None:
    bundle = cli.bundle(SLEEPER)
    before = cli.footprint()
    cli.fails("create", "--bundle", str(bundle), cid, says=says)
    assert cli.footprint() == before
    assert not (cli.tmp / "a").exists()  # "a/b" made nothing beside the state root either


def test_duplicate_id_is_refused_and_the_first_is_untouched(cli: Cli) -> None:
    bundle = cli.bundle(SLEEPER)
    cli.create("dup", bundle)
    first = cli.state("dup")
    before = cli.footprint()
    cli.fails("create", "--bundle", str(bundle), "dup", says=("dup", "already exists"))
    assert cli.footprint() == before
    assert cli.state("dup") == first and alive(first["pid"])
    cli.ok("delete", "--force", "dup")
    cli.assert_gone("dup")


def test_unknown_signal_is_refused(cli: Cli) -> None:
    pid = cli.running("sig", SLEEPER)["pid"]
    cli.fails("kill", "sig", "NOPE", says=("unknown signal", "NOPE"))
    assert cli.state("sig")["status"] == "running" and alive(pid)
    cli.ok("delete", "--force", "sig")


def test_start_of_a_running_container_is_refused(cli: Cli) -> None:
    pid = cli.running("twice", SLEEPER)["pid"]
    cli.fails("start", "twice", says=("twice", "running", "cannot start"))
    assert cli.state("twice")["status"] == "running" and alive(pid)
    cli.ok("delete", "--force", "twice")


def test_delete_of_a_running_container_needs_force(cli: Cli) -> None:
    pid = cli.running("busy", SLEEPER)["pid"]
    cli.fails("delete", "busy", says=("busy", "running", "--force"))
    time.sleep(0.1)
    assert cli.state("busy")["status"] == "running" and alive(pid)
    cli.ok("delete", "--force", "busy")
    assert not alive(pid)
    cli.assert_gone("busy")


def test_missing_binary_fails_create_without_hanging(cli: Cli) -> None:
    bundle = cli.bundle(["/nope"])
    before = cli.footprint()
    cli.used_ids.add("nobin")
    cli.fails("create", "--bundle", str(bundle), "nobin", timeout=15,
              says=("exec: /nope: no such file or directory",))
    assert cli.footprint() == before
    cli.assert_gone("nobin")


@pytest.mark.parametrize("command", ["create", "start", "state", "kill", "delete"])
def test_commands_without_an_id_print_usage(cli: Cli, command: str) -> None:
    result = cli.call(command)
    assert result.code != 0, str(result)
    assert "usage" in result.err.lower(), str(result)
    assert "ID" in result.err, str(result)
    assert cli.footprint() == (set(), set())


def test_unknown_command_fails(cli: Cli) -> None:
    result = cli.call("frobnicate")
    assert result.code != 0, str(result)
    assert "frobnicate" in result.err, str(result)


def test_verbs_on_an_unknown_container_fail(cli: Cli) -> None:
    for verb in ("start", "state", "kill", "delete", "pause", "resume", "ps"):
        cli.fails(verb, "ghost", says=("ghost", "does not exist"))


# -- delete ---------------------------------------------------------------------------------


def test_delete_removes_everything(cli: Cli) -> None:
    pid = cli.running("whole", SLEEPER)["pid"]
    cli.ok("exec", "--detach", "whole", "--", "sleep", "500")
    cgroups = [c for c in cli.cgroups() if Path(c).name == "whole"]
    assert cgroups, "the container has no cgroup to remove"
    assert (cli.state_root / "whole").is_dir()
    cli.ok("kill", "whole", "KILL")
    cli.wait_status("whole", "stopped")
    cli.ok("delete", "whole")
    assert not alive(pid)
    assert not (cli.state_root / "whole").exists()
    assert not [c for c in cgroups if Path(c).exists()]
    for hierarchy in CGROUP_ROOT.iterdir():
        assert not (hierarchy / cli.cgroup_parent / "whole").exists(), hierarchy
