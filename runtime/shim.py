"""The shim: a small monitor that is each detached container's parent.

``spawn_shim`` forks twice (the shim is nobody's child but init's or the nearest
subreaper's) and the shim then
- becomes a child subreaper, so the container's init is its child (forked by it,
  or re-parented to it from stage 1 with a user namespace) and every orphan of
  the container is reaped by it;
- creates and starts the container with stdout and stderr on pipes it owns;
- writes every line to a log file in the CRI format (``<RFC3339Nano> stdout F <line>``,
  ``P`` for a partial line), as the kubelet's readers expect;
- records the exit code, the signal and whether the kernel's OOM killer struck in
  ``exit.json`` beside the container's state, then exits.

It holds no reference to its caller: killing whoever started the container (the
CLI, the agent) does not touch the container.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import time
from pathlib import Path

from runtime import channel
from runtime.api import Runtime
from runtime.create import now_rfc3339
from runtime.errors import SetupError
from runtime.spec import ContainerConfig, load_bundle
from runtime.state import State, write_atomic

PARTIAL_LINE_LIMIT = 16 * 1024  # a line longer than this is logged in "P" pieces


def spawn_shim(rt: Runtime, container_id: str, bundle: Path | None = None,
               log_path: Path | None = None, config: ContainerConfig | None = None) -> State:
    """Run the container under a new, detached shim; returns its state once running."""
    if config is None:
        if bundle is None:
            raise SetupError("spawn_shim needs a bundle or a config")
        config = load_bundle(bundle).config
    rt.store.dir(container_id)  # reject a bad ID here, with the caller still listening
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    middle = os.fork()
    if middle == 0:
        code = 0
        try:
            os.close(report_r)
            os.setsid()
            if os.fork() == 0:
                _Shim(rt, container_id, config, bundle, log_path).run(report_w)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(report_w)
    os.waitpid(middle, 0)
    try:
        for message in channel.messages(report_r):
            if "error" in message:
                raise SetupError(message["error"])
            if message.get("running"):
                return rt.state(container_id)
    finally:
        os.close(report_r)
    raise SetupError(f"shim for {container_id} exited without starting it")


def exit_record(rt: Runtime, container_id: str) -> dict[str, object] | None:
    """What the shim recorded when the container ended, or None while it runs."""
    try:
        return dict(json.loads((rt.store.dir(container_id) / "exit.json").read_text()))
    except FileNotFoundError:
        return None


class _Shim:
    def __init__(self, rt: Runtime, container_id: str, config: ContainerConfig,
                 bundle: Path | None, log_path: Path | None) -> None:
        self.rt = rt
        self.id = container_id
        self.config = config
        self.bundle = bundle
        self.log_path = log_path

    def run(self, report_fd: int) -> None:
        """Never returns."""
        import prctl

        try:
            prctl.set_child_subreaper(1)
            wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(wake_w)
            signal.signal(signal.SIGCHLD, lambda *_: None)
            devnull = os.open(os.devnull, os.O_RDWR)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            self.rt.create(self.id, self.config, bundle=self.bundle,
                           stdio=(devnull, out_w, err_w))
            try:
                state = self.rt.start(self.id)
            except BaseException:
                self.rt.delete(self.id, force=True)  # nothing half-made stays behind
                raise
            for fd in (out_w, err_w):
                os.close(fd)
            log_path = self.log_path or self.rt.store.dir(self.id) / "container.log"
            log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - lives as long as we do
            started = now_rfc3339()
            channel.send(report_fd, running=True, pid=state.pid)
            os.close(report_fd)
        except BaseException as e:  # noqa: BLE001 - the spawner must hear every failure
            try:
                channel.send(report_fd, error=str(e) or type(e).__name__)
            finally:
                os._exit(1)
        # From here on nobody listens: stdio goes nowhere, not to the spawner's terminal.
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        status = self._pump(state.pid, {out_r: b"stdout", err_r: b"stderr"}, wake_r, log)
        self._record(status, started)
        os._exit(0)

    def _pump(self, init_pid: int, streams: dict[int, bytes], wake_r: int, log: object) -> int:
        """Copy output to the log until the init has exited and its pipes are drained."""
        sel = selectors.DefaultSelector()
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        pending = {fd: b"" for fd in streams}
        status: int | None = None
        drain_deadline = 0.0
        while streams and (status is None or time.monotonic() < drain_deadline):
            for key, _ in sel.select(timeout=0.2 if status is not None else None):
                fd = int(key.fd)
                if fd == wake_r:
                    _drain(wake_r)
                    status = self._reap(init_pid, status)
                    if status is not None and not drain_deadline:
                        drain_deadline = time.monotonic() + 1.0
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._write(log, streams[fd], pending[fd], final=True)
                    sel.unregister(fd)
                    del streams[fd]
                    continue
                pending[fd] = self._write(log, streams[fd], pending[fd] + chunk)
            if status is None:
                status = self._reap(init_pid, status)
                if status is not None:
                    drain_deadline = time.monotonic() + 1.0
        while status is None:
            _, raw = os.waitpid(init_pid, 0)
            status = raw
        return status

    @staticmethod
    def _reap(init_pid: int, status: int | None) -> int | None:
        # As a subreaper we inherit every orphan of the container: reap them all.
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return status
            if pid == 0:
                return status
            if pid == init_pid:
                status = raw

    @staticmethod
    def _write(log: object, stream: bytes, data: bytes, final: bool = False) -> bytes:
        lines = data.split(b"\n")
        rest = lines.pop()
        out = []
        for line in lines:
            out.append(b"%s %s F %s\n" % (now_rfc3339().encode(), stream, line))
        while len(rest) >= PARTIAL_LINE_LIMIT or (final and rest):
            piece, rest = rest[:PARTIAL_LINE_LIMIT], rest[PARTIAL_LINE_LIMIT:]
            tag = b"F" if final and not rest else b"P"
            out.append(b"%s %s %s %s\n" % (now_rfc3339().encode(), stream, tag, piece))
        if out:
            log.write(b"".join(out))  # type: ignore[attr-defined]
        return rest

    def _record(self, raw_status: int, started: str) -> None:
        oom_killed = False
        try:
            oom_killed = self.rt.stats(self.id).oom_kills > 0
        except Exception:  # noqa: BLE001 - the record matters more than this detail
            pass
        record = {
            "exitCode": os.WEXITSTATUS(raw_status) if os.WIFEXITED(raw_status)
            else 128 + os.WTERMSIG(raw_status),
            "signal": os.WTERMSIG(raw_status) if os.WIFSIGNALED(raw_status) else None,
            "oomKilled": oom_killed,
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        try:
            write_atomic(self.rt.store.dir(self.id) / "exit.json", json.dumps(record))
        except OSError:
            pass  # the container was deleted under us; nobody is left to read it


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
