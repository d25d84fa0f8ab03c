"""The shim: a small monitor that is each detached container's parent.

``spawn_shim`` forks twice (the shim is nobody's child but init's or the nearest
subreaper's) and the shim then
- becomes a child subreaper, so the container's init is its child (re-parented to
  it from the short-lived child that creates the container) and every orphan of
  the container is reaped by it;
- has the container created and started, with stdout and stderr on pipes it owns;
- writes every line to a log file in the CRI format (``<RFC3339Nano> stdout F <line>``,
  ``P`` for a partial line), as the kubelet's readers expect;
- records the exit code, the signal and whether the kernel's OOM killer struck in
  ``exit.json`` beside the container's state, then exits.

It holds no reference to its caller: killing whoever started the container (the
CLI, the agent) does not touch the container.

Memory: a shim lives as long as its container, so it is kept small. Forked from a
process that has imported the runtime, it shares that process's pages and owns
only those it writes; so the container's creation, which writes many, runs in a
child of the shim that exits once the container has started, and the collector is
kept off the pages set-up left (``gc.freeze``). A fork server starts shims with
``run_shim`` in a process it forked (not even unpickling the container's config
there: only the creating child needs it), and reads the outcome with
``shim_outcome``.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from runtime.api import Runtime
from runtime.channel import pickled, read_message, send_message
from runtime.create import now_rfc3339
from runtime.errors import RuntimeError_, SetupError
from runtime.processes import reap
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
    state_dir = rt.store.dir(container_id)  # a bad ID fails here, the caller listening
    spec = (config, bundle)
    job = ShimJob(lambda: rt, container_id, str(state_dir), lambda: spec,
                  None if log_path is None else str(log_path))
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    try:
        middle = os.fork()
        if middle == 0:
            code = 0
            try:
                os.close(report_r)
                detach(lambda: run_shim(job, report_w))
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(report_w)
        report_w = -1
        os.waitpid(middle, 0)
        return shim_outcome(read_message(report_r), container_id)
    finally:
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)


def detach(run: Callable[[], object]) -> None:
    """In a middle process that exits right after: a new session, and in it a child
    that runs ``run`` (which never returns). Once the middle is gone, the child is
    nobody's child but init's or the nearest subreaper's, and has no terminal."""
    os.setsid()
    if os.fork() == 0:
        run()


class ShimJob(NamedTuple):
    """What a shim needs, in plain strings; the runtime, the config and the bundle
    are made on demand: the child that creates the container needs them, the shim
    itself hardly ever (every object the shim makes is memory it keeps)."""

    runtime: Callable[[], Runtime]
    container_id: str
    state_dir: str  # the container's directory in the runtime's state
    spec: Callable[[], tuple[ContainerConfig, Path | None]]  # its config, its bundle
    log_path: str | None = None  # None: container.log in the state dir


def run_shim(job: ShimJob, report_fd: int) -> NoReturn:
    """Become the shim of a new container, in a process forked for it (twice, so
    that it is nobody's child). Its outcome, the pickled running ``State`` or the
    error, is written to ``report_fd`` with ``send_message``, for ``shim_outcome``."""
    _Shim(job).run(report_fd)


def shim_outcome(message: bytes | None, container_id: str) -> State:
    """The State a shim reported, or the error it reported raised: the runtime's own
    errors as they are, anything else as a SetupError with its words."""
    if not message:
        raise SetupError(f"shim for {container_id} exited without starting it")
    answer: Any = pickle.loads(message)
    if isinstance(answer, RuntimeError_):
        raise answer
    if isinstance(answer, BaseException):
        raise SetupError(f"shim for {container_id}: {answer}")
    if not isinstance(answer, State):
        raise SetupError(f"shim for {container_id} answered {answer!r}")
    return answer


def exit_record(rt: Runtime, container_id: str) -> dict[str, object] | None:
    """What the shim recorded when the container ended, or None while it runs."""
    try:
        return dict(json.loads((rt.store.dir(container_id) / "exit.json").read_text()))
    except FileNotFoundError:
        return None


class _Shim:
    def __init__(self, job: ShimJob) -> None:
        self.job = job
        self.id = job.container_id

    def run(self, report_fd: int) -> NoReturn:
        import prctl

        try:
            prctl.set_child_subreaper(1)
            wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(wake_w)
            signal.signal(signal.SIGCHLD, _ignore)
            devnull = os.open(os.devnull, os.O_RDWR)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            # Opened first when its place is known, so that failing leaves nothing.
            log = -1
            if self.job.log_path is not None:
                log = os.open(self.job.log_path, _LOG_FLAGS, 0o644)
            answer, init_pid = self._create_in_child((devnull, out_w, err_w), report_fd)
            for fd in (out_w, err_w):
                os.close(fd)
            if not init_pid:
                send_message(report_fd, answer or pickled(SetupError(
                    f"shim for {self.id}: creating the container failed without a word")))
                os._exit(1)
            if log < 0:
                try:
                    log = os.open(f"{self.job.state_dir}/container.log", _LOG_FLAGS, 0o644)
                except BaseException:
                    self.job.runtime().delete(self.id, force=True)  # no container without a log
                    raise
            started = now_rfc3339()
            send_message(report_fd, answer)
            os.close(report_fd)
        except BaseException as e:  # noqa: BLE001 - the spawner must hear every failure
            try:
                send_message(report_fd, pickled(e))
            finally:
                os._exit(1)
        # From here on nobody listens: stdio goes nowhere, not to the spawner's terminal.
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # What set-up left is never garbage: keep the collector off those pages, so a
        # collection in this long-lived process does not copy them.
        gc.freeze()
        status = self._pump(init_pid, {out_r: b"stdout", err_r: b"stderr"}, wake_r, log)
        self._record(status, started)
        os._exit(0)

    def _create_in_child(self, stdio: tuple[int, int, int], report_fd: int,
                         ) -> tuple[bytes, int]:
        """Create and start the container from a short-lived child: the pickled State
        (or error) it answers, and the init's PID (0 when it failed).

        Creating a container touches much of the runtime's code and data, and every
        page a process writes becomes its own copy: done here, those copies would stay
        in the shim for the container's whole life (about 2 MiB). The child does it
        and exits; as a subreaper, the shim inherits the container's init from it.
        The shim does not even unpickle the answer: it passes it on."""
        result_r, result_w = os.pipe2(os.O_CLOEXEC)
        child = os.fork()
        if child == 0:
            try:
                os.close(result_r)
                os.close(report_fd)
                job = self.job
                rt = job.runtime()
                config, bundle = job.spec()
                rt.create(self.id, config, bundle=bundle, stdio=stdio)
                try:
                    state = rt.start(self.id)
                except BaseException:
                    rt.delete(self.id, force=True)  # nothing half-made stays behind
                    raise
                send_message(result_w, b"%d %s" % (state.pid, pickled(state)))
            except BaseException as e:  # noqa: BLE001 - the shim passes it on
                send_message(result_w, b"0 " + pickled(e))
            finally:
                os._exit(0)
        os.close(result_w)
        try:
            message = read_message(result_r) or b"0 "
        finally:
            os.close(result_r)
            reap(child)  # it exits right after its answer
        pid, _, answer = message.partition(b" ")
        return answer, int(pid)

    def _pump(self, init_pid: int, streams: dict[int, bytes], wake_r: int, log: int) -> int:
        """Copy output to the log until the init has exited and its pipes are drained."""
        poller = select.poll()
        for fd in (*streams, wake_r):
            poller.register(fd, select.POLLIN)
        pending = {fd: b"" for fd in streams}
        status: int | None = None
        drain_deadline = 0.0
        while streams and (status is None or time.monotonic() < drain_deadline):
            for fd, _ in poller.poll(200 if status is not None else None):
                if fd == wake_r:
                    _drain(wake_r)
                    status = self._reap(init_pid, status)
                    if status is not None and not drain_deadline:
                        drain_deadline = time.monotonic() + 1.0
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._write(log, streams[fd], pending[fd], final=True)
                    poller.unregister(fd)
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
    def _write(log: int, stream: bytes, data: bytes, final: bool = False) -> bytes:
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
            data = b"".join(out)
            while data:
                data = data[os.write(log, data):]
        return rest

    def _record(self, raw_status: int, started: str) -> None:
        oom_killed = False
        try:
            oom_killed = self.job.runtime().stats(self.id).oom_kills > 0
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
            write_atomic(Path(self.job.state_dir) / "exit.json", json.dumps(record))
        except OSError:
            pass  # the container was deleted under us; nobody is left to read it


_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def _ignore(signum: int, frame: object) -> None:
    """SIGCHLD's handler: it only has to exist, so the wakeup fd hears the signal."""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
