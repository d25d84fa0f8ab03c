"""A container monitor, the small parent a container engine keeps beside an OCI runtime
(podman's conmon, containerd's shim), and the test-side handle that drives it.

    python -m tests.support.monitor --id ID --bundle B --result FILE -- RUNTIME [GLOBAL ARGS]

The program makes itself a child subreaper and owns pipes for the container's stdio.
It runs ``RUNTIME … create --bundle B [--pid-file F] ID`` with those pipes as the
child's stdio and reads the pid file. ``create`` leaves the container's init behind
when it exits, so the init is re-parented to the monitor, which reaps it (and any
other orphan of the container) and keeps its wait status.

It takes one JSON command per line on stdin and answers each with one JSON line on
stdout, so a test can go step by step:

    {"op": "create", "pid_file": "p", "cwd": "/d", "global_args": [...],
     "create_args": ["--console-socket", "S"], "stdin": "t"}
                                       -> {"code", "pid", "err"}
    {"op": "runtime", "args": [...], "cwd": "/d"}
                                       -> {"code", "out", "err"}   any other command
    {"op": "wait", "timeout": 5}       -> {"exited", "exitCode", "signal"}
    {"op": "output"}                   -> {"stdout", "stderr"}     the init's, so far
    {"op": "quit"}                     -> {"result"}, after writing FILE, then exits

``start``, ``kill``, ``exec`` and ``delete`` go through ``runtime``, with stdout and
stderr in files: a detached ``exec`` leaves a process holding them. With ``--oneshot``
the monitor runs create, start, wait and ``delete --force`` by itself. FILE gets
``{"pid", "exitCode", "signal", "stdout", "stderr", "reaped"}``; ``exitCode`` is 128+N
after a death by signal N, as engines report it.

The program itself imports only the standard library and prctl: it stands in for
a monitor written in any language.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUNTIME_TIMEOUT = 60.0
DRAIN_AFTER_EXIT = 2.0  # a process of the container may still hold the pipes


@dataclass
class Monitor:
    argv: list[str]  # the runtime and its global options
    cid: str
    bundle: str
    result_path: Path
    init_pid: int | None = None
    statuses: dict[int, int] = field(default_factory=dict)  # pid -> wait status
    reaped: list[int] = field(default_factory=list)  # every child but runtime commands
    commands: dict[int, int | None] = field(default_factory=dict)  # running runtime commands
    output: dict[str, bytearray] = field(
        default_factory=lambda: {"stdout": bytearray(), "stderr": bytearray()})
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    # -- the runtime --------------------------------------------------------------

    def spawn(self, argv: list[str], stdin: int, stdout: int, stderr: int,
              cwd: str | None) -> int:
        """Run one runtime command to its end and return its exit code (-N: signal N).

        The monitor keeps reading and reaping meanwhile, as conmon does while its engine
        runs the runtime: ``delete --force`` waits for the killed init to become a
        zombie, and the kernel holds a PID namespace's init back until its other
        processes are reaped, by us. So the command is reaped by the same loop as
        everything else, never by ``subprocess``."""
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd)
        self.commands[proc.pid] = None
        deadline = time.monotonic() + RUNTIME_TIMEOUT
        while self.commands[proc.pid] is None:
            self.pump(0.01)
            if time.monotonic() > deadline:
                os.kill(proc.pid, 9)  # ours: it is not reaped yet, so the PID is still its
                deadline = float("inf")
        status = self.commands.pop(proc.pid)
        assert status is not None
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits itself
        return proc.returncode

    def runtime(self, args: list[str], cwd: str | None = None) -> dict[str, Any]:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
                open(os.devnull, "rb") as devnull:
            code = self.spawn([*self.argv, *args], devnull.fileno(), out.fileno(),
                              err.fileno(), cwd)
            out.seek(0)
            err.seek(0)
            return {"code": code, "out": out.read().decode(errors="replace"),
                    "err": err.read().decode(errors="replace")}

    def create(self, pid_file: str | None, cwd: str | None, global_args: list[str],
               create_args: list[str], stdin_text: str | None) -> dict[str, Any]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if stdin_text is None:
            in_r, in_w = os.open(os.devnull, os.O_RDONLY), -1
        else:
            in_r, in_w = os.pipe()
        for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, name)
        argv = [*self.argv, *global_args, "create", "--bundle", self.bundle, *create_args]
        if pid_file is not None:
            argv += ["--pid-file", pid_file]
        try:
            code = self.spawn([*argv, self.cid], in_r, out_w, err_w, cwd)
        finally:
            # Only the container (and the runtime, now gone) may hold the write ends,
            # so the pipes reach EOF when the container's last process ends.
            for fd in (out_w, err_w, in_r):
                os.close(fd)
        if in_w >= 0:
            assert stdin_text is not None
            os.write(in_w, stdin_text.encode())
            os.close(in_w)
        pid = None
        if code == 0 and pid_file is not None:
            pid = int(Path(cwd or ".", pid_file).read_text().strip())
            self.init_pid = pid
        self.pump(0.05)
        return {"code": code, "pid": pid, "err": self.output["stderr"].decode(errors="replace")}

    # -- the container's side -----------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Read what the container wrote, then reap every child that has ended."""
        if self.selector.get_map():
            for key, _ in self.selector.select(timeout):
                self.read(key)
        else:
            time.sleep(timeout)
        self.reap()

    def read(self, key: selectors.SelectorKey) -> None:
        fd = int(key.fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.output[key.data].extend(chunk)
        else:
            self.selector.unregister(fd)
            os.close(fd)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.commands:
                self.commands[pid] = status
            else:
                self.statuses[pid] = status
                self.reaped.append(pid)

    def init_status(self) -> dict[str, Any]:
        status = self.statuses.get(self.init_pid) if self.init_pid is not None else None
        if status is None:
            return {"exited": False, "exitCode": None, "signal": None}
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return {"exited": True, "exitCode": 128 + sig, "signal": sig}
        return {"exited": True, "exitCode": os.WEXITSTATUS(status), "signal": None}

    def wait(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.init_status()["exited"] and time.monotonic() < deadline:
            self.pump(0.02)
        return self.init_status()

    def finish(self) -> dict[str, Any]:
        """Drain the pipes (briefly, if the init is gone) and write the result file."""
        if self.init_pid is not None:
            self.wait(DRAIN_AFTER_EXIT)
        deadline = time.monotonic() + DRAIN_AFTER_EXIT
        while self.selector.get_map() and time.monotonic() < deadline:
            self.pump(0.02)
        self.pump(0)
        result = {"pid": self.init_pid, **self.init_status(),
                  "stdout": self.output["stdout"].decode(errors="replace"),
                  "stderr": self.output["stderr"].decode(errors="replace"),
                  "reaped": self.reaped}
        del result["exited"]
        tmp = self.result_path.with_name(self.result_path.name + ".tmp")
        tmp.write_text(json.dumps(result))
        tmp.rename(self.result_path)
        return result

    # -- the control channel ------------------------------------------------------

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "create":
            return self.create(cmd.get("pid_file"), cmd.get("cwd"), cmd.get("global_args", []),
                               cmd.get("create_args", []), cmd.get("stdin"))
        if op == "runtime":
            reply = self.runtime(cmd["args"], cmd.get("cwd"))
            self.pump(0)
            return reply
        if op == "wait":
            return self.wait(float(cmd.get("timeout", 10)))
        if op == "output":
            self.pump(0)
            return {k: v.decode(errors="replace") for k, v in self.output.items()}
        if op == "quit":
            return {"result": self.finish()}
        raise ValueError(f"unknown op {op!r}")

    def serve(self) -> None:
        # The control channel is not in ``self.selector``: ``pump`` runs during a
        # command too, and must not swallow the test's next one.
        control = sys.stdin.fileno()
        pending = b""
        with selectors.DefaultSelector() as waiting:
            waiting.register(control, selectors.EVENT_READ)
            while True:
                # Between commands, the container's output and end are collected.
                if waiting.select(0):
                    chunk = os.read(control, 65536)
                    if not chunk:  # the test went away
                        self.finish()
                        return
                    pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    cmd = json.loads(line)
                    try:
                        reply = self.handle(cmd)
                    except Exception as e:  # the test sees it as an answer, not a hang
                        reply = {"error": f"{type(e).__name__}: {e}"}
                    sys.stdout.write(json.dumps(reply) + "\n")
                    sys.stdout.flush()
                    if cmd["op"] == "quit":
                        return
                self.pump(0.02)

    def oneshot(self, pid_file: str, timeout: float) -> dict[str, Any]:
        created = self.create(pid_file, None, [], [], None)
        if created["code"] == 0:
            self.runtime(["start", self.cid])
            self.wait(timeout)
            self.runtime(["delete", "--force", self.cid])
        return self.finish()


def main() -> None:
    import prctl

    p = argparse.ArgumentParser(prog="python -m tests.support.monitor")
    p.add_argument("--id", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--result", required=True, type=Path)
    p.add_argument("--oneshot", action="store_true",
                   help="create, start, wait, delete --force, write the result, exit")
    p.add_argument("--pid-file", default=None, help="with --oneshot")
    p.add_argument("--timeout", type=float, default=30.0, help="with --oneshot")
    p.add_argument("runtime", nargs=argparse.REMAINDER, help="-- RUNTIME [GLOBAL ARGS]")
    args = p.parse_args()
    argv = args.runtime[1:] if args.runtime[:1] == ["--"] else args.runtime
    if not argv:
        p.error("give the runtime after --")
    # Orphans of our children, the container's init first, come to us, not to init(1).
    prctl.set_child_subreaper(1)
    monitor = Monitor(argv, args.id, str(args.bundle), args.result)
    if args.oneshot:
        pid_file = args.pid_file or str(args.result.with_name(args.result.name + ".pid"))
        monitor.oneshot(pid_file, args.timeout)
    else:
        monitor.serve()


# -- the test's side ------------------------------------------------------------------


def monitor_env() -> dict[str, str]:
    """The environment to run the monitor program in, from any working directory."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


class MonitorError(Exception):
    pass


class MonitorHandle:
    """A running monitor program, driven over its control channel."""

    def __init__(self, runtime_argv: list[str], cid: str, bundle: Path, result: Path,
                 workdir: Path) -> None:
        """``workdir``, the monitor's own working directory, is where relative paths
        given to the runtime (a pid file) land."""
        self.cid = cid
        self.result_path = result
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.monitor", "--id", cid, "--bundle",
             str(bundle), "--result", str(result), "--", *runtime_argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=workdir, env=monitor_env())
        self.result: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, op: str, answer_within: float = RUNTIME_TIMEOUT + 10, **kw: Any
             ) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(answer_within):
                raise MonitorError(f"monitor {self.pid}: no answer to {op!r} "
                                   f"in {answer_within}s")
        line = self.proc.stdout.readline()
        if not line:
            raise MonitorError(f"monitor {self.pid} exited during {op!r}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise MonitorError(f"monitor {self.pid}: {op}: {reply['error']}")
        return reply

    def create(self, pid_file: str | None = "init.pid", cwd: Path | None = None,
               global_args: tuple[str, ...] = (), create_args: tuple[str, ...] = (),
               stdin: str | None = None) -> dict[str, Any]:
        return self.call("create", pid_file=pid_file, cwd=str(cwd) if cwd else None,
                         stdin=stdin, global_args=list(global_args),
                         create_args=list(create_args))

    def runtime(self, *args: str, cwd: Path | None = None) -> dict[str, Any]:
        return self.call("runtime", args=list(args), cwd=str(cwd) if cwd else None)

    def ok(self, *args: str) -> dict[str, Any]:
        reply = self.runtime(*args)
        assert reply["code"] == 0, f"{args} failed: {reply}"
        return reply

    def wait(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.call("wait", answer_within=timeout + 10, timeout=timeout)

    def quit(self) -> dict[str, Any]:
        if self.result is None:
            self.result = self.call("quit")["result"]
            self.proc.wait(10)
        return self.result

    def close(self) -> None:
        """Force the container away, collect the result, and end the monitor."""
        try:
            if self.proc.poll() is None:
                self.runtime("delete", "--force", self.cid)
                self.quit()
        except (MonitorError, OSError, subprocess.TimeoutExpired):
            if self.proc.poll() is None:
                self.proc.kill()
        finally:
            self.proc.wait(10)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()


@dataclass
class Result:
    """One runtime command run by the test itself (no container stdio involved)."""
    args: list[str]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return (f"$ {' '.join(a[:60] for a in self.args)}\n"
                f"exit {self.code}\nstdout: {self.out!r}\nstderr: {self.err!r}")

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Engine:
    """One runtime binary as a container engine uses it: its own ``--root``, bundles
    whose cgroups live under the test session's cgroup parent, and monitors."""
    name: str  # "podium" or "runc": also the cgroup name prefix
    binary: str
    tmp: Path
    rootfs: Path
    cgroup_parent: str
    monitors: list[MonitorHandle] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    @property
    def root(self) -> Path:
        return self.tmp / f"{self.name}-state"

    def argv(self, *global_args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *global_args]

    def cgroup_path(self, cid: str) -> str:
        return f"/{self.cgroup_parent}/{self.name}-{cid}"

    def bundle(self, cid: str, args: list[str], edit: Any = None) -> Path:
        """A bundle over the shared busybox rootfs (read-only), with the config
        ``runtime.spec.default_config`` writes at an ``ociVersion`` runc 1.1 accepts."""
        from runtime.spec import default_config

        path = self.tmp / f"{self.name}-bundle-{cid}-{len(self.ids)}"
        path.mkdir()
        config = default_config(args)
        config["ociVersion"] = "1.0.2"
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        config["linux"]["cgroupsPath"] = self.cgroup_path(cid)
        if edit is not None:
            edit(config)
        (path / "config.json").write_text(json.dumps(config))
        self.ids.add(cid)
        return path

    def monitor(self, cid: str, bundle: Path, *global_args: str) -> MonitorHandle:
        self.ids.add(cid)
        workdir = self.tmp / f"{self.name}-monitor-{cid}-{len(self.monitors)}"
        workdir.mkdir()
        handle = MonitorHandle(self.argv(*global_args), cid, bundle,
                               workdir / "result.json", workdir)
        self.monitors.append(handle)
        return handle

    def call(self, *args: str, global_args: tuple[str, ...] = (), cwd: Path | None = None,
             timeout: float = RUNTIME_TIMEOUT) -> Result:
        argv = [*self.argv(*global_args), *args]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  cwd=cwd, timeout=timeout)
            out.seek(0)
            err.seek(0)
            return Result([Path(self.binary).name, *args], proc.returncode,
                          out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"))

    def state(self, cid: str) -> dict[str, Any]:
        result = self.call("state", cid)
        assert result.code == 0, str(result)
        data: dict[str, Any] = result.json()
        return data

    def close(self) -> None:
        """Force away every container the test made, then end the monitors."""
        for handle in self.monitors:
            handle.close()
        for cid in self.ids:
            if (self.root / cid).exists():
                self.call("delete", "--force", cid)


if __name__ == "__main__":
    main()
