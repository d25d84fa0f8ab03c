"""A fork server (zygote): the one place a threaded caller gets shims from.

``fork()`` in a process that runs threads copies only the calling thread; locks
other threads held (gRPC's, the allocator's, logging's) stay locked forever in
the child. So the agent starts a ``ForkServer`` before it starts any thread: a
single-threaded child that waits on a socket and forks each shim on request. The
child is a fresh interpreter that imports only the runtime (``ForkServer.start``
says why: the shims' memory).

Requests and answers are pickled over a private socketpair between a parent and
the child it started: both ends are the same program, nobody else holds the socket.
A request is one byte saying its kind, then the pickle.

Three kinds of request:

    ShimRequest   start a container under a new shim: the server forks (twice) the
                  shim, ``runtime.shim.run_shim``, and answers at once with the read
                  end of a pipe (passed as a file descriptor); the shim has the
                  container created and started and writes the pickled ``State`` (or
                  the error) into the pipe. So several containers start at once.
                  The server does not even unpickle the request: the less it writes
                  between two forks, the more pages each shim shares with it and
                  with the other shims (see ``runtime.shim`` on memory).
    ExecRequest   run a process in a running container and wait for it (a probe):
                  a helper as above, a child subreaper, execs the process, waits at
                  most the timeout (killing it then), reaps it and writes the
                  pickled outcome into the pipe. So a slow
                  probe never holds up the server, and the caller waits on its own pipe.
                  The server reaps its helpers, and waits for them when it stops.
    SessionRequest
                  run a process in a running container attached to its caller (an
                  interactive exec): the server forks a helper as above and answers
                  with one end of a socketpair; the helper starts the process with
                  pipes for stdio (or a pty), sends its PID and the caller's ends of
                  them (SCM_RIGHTS) over the socketpair, then waits for it: it sends
                  the exit status when the process ends, and kills it (SIGKILL to its
                  process group, by PID, before reaping it) when the caller asks or
                  closes its end. The caller holds an ``ExecSession``.
"""

from __future__ import annotations

import _thread
import gc
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from runtime.errors import RuntimeError_, SetupError
from runtime.processes import (
    exit_code,
    read_message,
    reap_children,
    send_message,
    signal_pid,
    wait_with_timeout,
)
from runtime.spec.model import ContainerConfig, Process
from runtime.state import State, StateStore

if TYPE_CHECKING:
    from runtime.api import Runtime
    from runtime.cgroups.base import CgroupDriver

_MAX_MESSAGE = 4 * 1024 * 1024
_REAP_EVERY = 0.5  # seconds: how often an idle server looks for ended helpers
_EXEC_MARGIN = 10.0  # seconds past an exec's timeout before its caller stops waiting
_SESSION_SETUP = 30.0  # seconds an attached exec may take to start
_SHIM_START = 60.0  # seconds a container may take to be created and started
_KILL = b"kill"
_SHIM, _EXEC, _SESSION = b"s", b"e", b"i"  # the kind of a request: its first byte


class ShimRequest(NamedTuple):
    runtime_root: Path
    cgroup_parent: str
    container_id: str
    config: ContainerConfig
    bundle: Path | None = None
    log_path: Path | None = None


class ExecRequest(NamedTuple):
    runtime_root: Path
    cgroup_parent: str
    container_id: str
    process: Process
    timeout: float


class SessionRequest(NamedTuple):
    runtime_root: Path
    cgroup_parent: str
    container_id: str
    process: Process  # with ``terminal``: a pty for its stdio, the master handed back
    stdin: bool = False  # a pipe for its stdin; else /dev/null (a pty is stdin anyway)


class ExitStatus(NamedTuple):
    exit_code: int  # 128+n when signal n ended it
    signal: int = 0  # 0: it exited


class ExecSession:
    """A process exec'd in a container by the fork server, attached to this process.

    ``stdout`` (and ``stderr`` without a terminal) are read ends of its output;
    ``stdin`` writes to its input: a pipe, None when it reads /dev/null, or with a
    terminal a second fd of the pty's master (``stdout`` is the master), which also
    takes ``TIOCSWINSZ``. Every fd is close-on-exec and the session's own until
    ``take_stdin`` hands that one over; ``close`` closes the rest. ``fileno`` is
    readable when the exit status has arrived, for ``select``.
    """

    def __init__(self, pid: int, control: socket.socket, stdout: int, stderr: int | None,
                 stdin: int | None, terminal: bool, container_id: str) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.terminal = terminal
        self.container_id = container_id
        self._control = control
        self._status: ExitStatus | None = None
        self._closed = False
        self._lock = _thread.allocate_lock()  # kill (any thread) against close

    def fileno(self) -> int:
        return self._control.fileno()

    def take_stdin(self) -> int | None:
        """The stdin fd, now the caller's to write and close (closing a pipe is EOF)."""
        fd, self.stdin = self.stdin, None
        return fd

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """The exit status, once the process has ended and been reaped; None when it
        still runs after ``timeout`` seconds (None: wait as long as it takes)."""
        if self._status is not None or self._closed:
            return self._status
        if not select.select([self._control], [], [], timeout)[0]:
            return None
        try:
            data = self._control.recv(_MAX_MESSAGE)
        except OSError:
            data = b""
        answer: Any = pickle.loads(data) if data else None
        if not isinstance(answer, ExitStatus):
            raise SetupError(f"exec in {self.container_id}: its helper ended without "
                             f"the exit status of process {self.pid}")
        self._status = answer
        return answer

    def kill(self) -> None:
        """SIGKILL the process (and its process group); it is reaped and its status
        sent as when it ends by itself. Thread-safe; a no-op once it has ended."""
        with self._lock:
            if self._status is None and not self._closed:
                try:
                    self._control.send(_KILL)
                except OSError:
                    pass  # the helper is gone already: so is the process

    def close(self) -> None:
        """Kill the process if it still runs, wait until it is reaped (a bounded
        wait), and close every fd the session still holds."""
        if self._closed:
            return
        try:
            if self._status is None:
                self.kill()
                self.wait(_EXEC_MARGIN)
        except SetupError:
            pass  # the helper died: it took the process with it, or init reaps it
        finally:
            with self._lock:
                self._closed = True
                self._control.close()
                for fd in (self.stdout, self.stderr, self.stdin):  # three distinct fds
                    if fd is not None:
                        _close(fd)


class ForkServer:
    def __init__(self, pid: int, sock: socket.socket,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._sock = sock
        self._process = process
        self._lock = _thread.allocate_lock()

    @classmethod
    def start(cls) -> ForkServer:
        """Start the server. Call this before the caller starts any thread.

        The server is a fresh interpreter (``python -c``, the caller's ``sys.path``)
        that imports only the runtime, not a fork of the caller: every shim is forked
        from it and shares its pages, and a fork of the agent would carry the agent's
        modules (gRPC, protobuf) and their at-fork handlers (threading's, logging's),
        which run in every child and copy each page they touch: about 0.5 MiB more
        in every shim, for as long as its container runs."""
        import threading

        if threading.active_count() > 1:
            raise SetupError("start the fork server before any thread: "
                             f"{threading.active_count()} threads run already")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), *sys.path],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as e:
            ours.close()
            raise SetupError(f"fork server: cannot start {sys.executable}: {e}") from None
        finally:
            theirs.close()
        return cls(process.pid, ours, process)

    def spawn_shim(self, request: ShimRequest) -> State:
        """Start the container under a new shim (see ``runtime.shim``); thread-safe, and
        several may start at once: each caller waits for its own shim's answer."""
        fd = self._ask_for_fd(request, request.container_id)
        try:
            outcome = read_message(fd, _SHIM_START)
        finally:
            os.close(fd)
        if not outcome:
            raise SetupError(f"fork server: container {request.container_id}: no answer "
                             f"from its shim" + (f" after {_SHIM_START:g}s"
                                                 if outcome is None else ""))
        answer: Any = pickle.loads(outcome)
        if isinstance(answer, RuntimeError_):
            raise answer
        if isinstance(answer, BaseException):
            raise SetupError(f"fork server: {answer}")
        if not isinstance(answer, State):
            raise SetupError(f"fork server answered {answer!r}")
        return answer

    def exec_and_wait(self, runtime_root: Path, cgroup_parent: str, container_id: str,
                      process: Process, timeout: float) -> int:
        """Run ``process`` (stdio on /dev/null) in the running container and return its
        exit code (128+n for signal n). Kills it and raises TimeoutError when it has
        not ended after ``timeout`` seconds; thread-safe, and other requests go on
        while it runs."""
        request = ExecRequest(runtime_root, cgroup_parent, container_id, process, timeout)
        fd = self._ask_for_fd(request, container_id)
        try:
            outcome = read_message(fd, timeout + _EXEC_MARGIN)
        finally:
            os.close(fd)
        if outcome is None:
            raise SetupError(f"fork server: exec in {container_id}: no answer after "
                             f"{timeout + _EXEC_MARGIN:g}s")
        if not outcome:
            raise SetupError(f"fork server: exec in {container_id}: its helper failed")
        result: Any = pickle.loads(outcome)
        if isinstance(result, bool) or not isinstance(result, int | BaseException):
            raise SetupError(f"fork server: exec in {container_id}: answered {result!r}")
        if isinstance(result, BaseException):
            raise result
        return result

    def _ask_for_fd(self, request: ShimRequest | ExecRequest | SessionRequest,
                    container_id: str) -> int:
        """Sends a request whose answer carries one descriptor (the helper's end),
        and returns it; an answer without one is the error it reports."""
        with self._lock:
            self._sock.send(_encode(request))
            data, fds, _, _ = socket.recv_fds(self._sock, _MAX_MESSAGE, 1)
        answer: Any = pickle.loads(data)
        if not fds:
            if isinstance(answer, RuntimeError_):
                raise answer
            raise SetupError(f"fork server: {container_id}: {answer}")
        return fds[0]

    def start_session(self, request: SessionRequest,
                      timeout: float = _SESSION_SETUP) -> ExecSession:
        """Start ``request.process`` in the running container, attached to pipes (or a
        pty) this process reads and writes; thread-safe. A program that cannot be
        executed raises ``SetupError`` with the runtime's message ("exec: …")."""
        cid = request.container_id
        fd = self._ask_for_fd(request, cid)
        os.set_inheritable(fd, False)  # recv_fds cannot ask for MSG_CMSG_CLOEXEC
        control = socket.socket(fileno=fd)
        try:
            if not select.select([control], [], [], timeout)[0]:
                raise SetupError(f"fork server: exec in {cid}: not started after {timeout:g}s")
            data, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, 3)
            for fd in fds:
                os.set_inheritable(fd, False)
            return _session(request, control, data, fds)
        except BaseException:
            control.close()  # the helper kills the process, if it started one
            raise

    def close(self) -> None:
        """Stop the server; shims it started keep running."""
        self._sock.close()
        if self._process is not None:
            self._process.wait()
            return
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


# The server's interpreter: the caller's sys.path, then ``serve`` on the socket.
_BOOT = ("import sys; sys.path[:] = sys.argv[2:]; "
         "from runtime.forkserver import serve; serve(int(sys.argv[1]))")


def serve(fd: int) -> NoReturn:
    """The fork server's main (``ForkServer.start`` runs it), on its end of the
    socketpair; it returns when the caller closes the other end."""
    code = 0
    try:
        # Like the caller's terminal signals: the server ends with its socket, and
        # a handler (unlike SIG_IGN) does not outlive the exec of a container.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _no_op)
        _warm()
        _serve(socket.socket(fileno=fd))
    except BaseException:  # noqa: BLE001
        code = 1
    os._exit(code)


def _no_op(signum: int, frame: object) -> None:
    pass


def _serve(sock: socket.socket) -> None:
    helpers: set[int] = set()
    try:
        while True:
            _reap_ended(helpers)
            if not select.select([sock], [], [], _REAP_EVERY)[0]:
                continue
            data = sock.recv(_MAX_MESSAGE)
            if not data:
                return  # the parent closed its end (or died)
            kind, body = data[:1], data[1:]
            if kind == _SHIM:
                _start_shim(sock, body)
                continue
            request: ExecRequest | SessionRequest = pickle.loads(body)
            if isinstance(request, ExecRequest):
                _in_helper(sock, helpers, f"exec in {request.container_id}",
                           partial(_exec_helper, request))
            else:
                _start_session(sock, request, helpers)
    finally:
        for pid in helpers:  # each ends within its request's timeout
            exit_code(pid)


def _warm() -> None:
    """Imports, in the server, what creating a container, running its shim and
    exec'ing into it need: every helper and shim forked after this shares those
    pages with the server instead of importing its own copy."""
    import prctl  # noqa: F401 - imported to be shared

    import runtime.api  # noqa: F401
    import runtime.create  # noqa: F401
    import runtime.exec  # noqa: F401
    import runtime.init  # noqa: F401
    import runtime.shim  # noqa: F401
    import runtime.start  # noqa: F401
    from runtime.cgroups import detect

    global _driver
    try:
        _driver = detect()  # once: every Runtime made here and in the children uses it
    except Exception:  # noqa: BLE001 - the container's create will say what is wrong
        pass
    # Out of the collector's sight from now on: a collection here would write into
    # every object's header, and so unshare those pages from every shim forked
    # before it (each shim then owning a copy).
    gc.freeze()


def _start_shim(sock: socket.socket, body: bytes) -> None:
    """Forks the shim of a pickled ``ShimRequest`` (through a middle process that
    exits at once, so the shim is not the server's child) and hands back the read
    end of the pipe it reports on."""
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
    except OSError as e:
        sock.send(pickle.dumps(SetupError(f"shim: pipe: {e}")))
        return
    try:
        middle = os.fork()
    except OSError as e:
        os.close(read_end)
        os.close(write_end)
        sock.send(pickle.dumps(SetupError(f"shim: fork: {e}")))
        return
    if middle == 0:
        code = 0
        try:
            sock.close()
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                _shim_main(body, write_end)
        except BaseException:  # noqa: BLE001 - the caller sees a pipe closed empty
            code = 1
        os._exit(code)
    os.close(write_end)
    exit_code(middle)  # it only forks and exits
    try:
        socket.send_fds(sock, [pickle.dumps(None)], [read_end])
    finally:
        os.close(read_end)


def _encode(request: ShimRequest | ExecRequest | SessionRequest) -> bytes:
    if isinstance(request, ShimRequest):
        # The config pickled apart: the shim hands it on to the child that creates the
        # container without unpickling it itself (see ``runtime.shim``).
        # Plain strings for the shim (see ``runtime.shim.ShimJob``); a bad ID fails here.
        r = request
        state_dir = str(StateStore(r.runtime_root).dir(r.container_id))
        return _SHIM + pickle.dumps((
            str(r.runtime_root), r.cgroup_parent, r.container_id, state_dir,
            None if r.log_path is None else str(r.log_path), pickle.dumps((r.config, r.bundle))))
    return (_EXEC if isinstance(request, ExecRequest) else _SESSION) + pickle.dumps(request)


def _shim_main(body: bytes, report_fd: int) -> None:
    """In the shim's process: read the request, then become its shim (never returns)."""
    from runtime.shim import ShimJob, run_shim

    try:
        root, cgroup_parent, container_id, state_dir, log_path, spec = pickle.loads(body)
        job = ShimJob(partial(_runtime, root, cgroup_parent), container_id, state_dir,
                      partial(pickle.loads, spec), log_path)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        send_message(report_fd, _picklable(e))
        os._exit(1)
    run_shim(job, report_fd)


_driver: CgroupDriver | None = None  # the host's, detected by ``_warm``


def _runtime(root: str | Path, cgroup_parent: str) -> Runtime:
    """A Runtime on the driver detected once (detecting reads the mount table)."""
    from runtime.api import Runtime

    return Runtime(root=Path(root), cgroup_parent=cgroup_parent, cgroup_driver=_driver)


def _in_helper(sock: socket.socket, helpers: set[int], what: str,
               work: Callable[[], object]) -> None:
    """Forks a helper that runs ``work`` and writes its pickled outcome to a pipe whose
    read end goes back to the caller at once: the server is free for the next request
    while the helper works (a container's creation, an exec's wait)."""
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
    except OSError as e:
        sock.send(pickle.dumps(SetupError(f"{what}: pipe: {e}")))
        return
    try:
        pid = os.fork()
    except OSError as e:
        os.close(read_end)
        os.close(write_end)
        sock.send(pickle.dumps(SetupError(f"{what}: fork: {e}")))
        return
    if pid == 0:
        code = 0
        try:
            sock.close()
            os.close(read_end)
            send_message(write_end, pickle.dumps(work()))
        except BaseException:  # noqa: BLE001 - the caller sees a pipe closed empty
            code = 1
        os._exit(code)
    helpers.add(pid)
    os.close(write_end)
    try:
        socket.send_fds(sock, [pickle.dumps(None)], [read_end])
    finally:
        os.close(read_end)


def _exec_helper(request: ExecRequest) -> object:
    """In the helper: exec, wait with the timeout, reap. Returns the exit code, or the
    exception to raise in the caller."""
    import prctl

    try:
        # The exec'd process is re-parented to us, not to the server or the agent.
        prctl.set_child_subreaper(1)
        rt = _runtime(request.runtime_root, request.cgroup_parent)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = rt.exec(request.container_id, request.process._replace(terminal=False),
                          stdio=(devnull, devnull, devnull))
        finally:
            os.close(devnull)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        _reap_all()
        return e
    try:
        return wait_with_timeout(pid, request.timeout)
    except TimeoutError as e:
        return e
    finally:
        reap_children()


def _session(request: SessionRequest, control: socket.socket, data: bytes,
             fds: list[int]) -> ExecSession:
    """The caller's side of a started session, from the helper's first message."""
    cid = request.container_id
    try:
        answer: Any = pickle.loads(data) if data else None
        if isinstance(answer, RuntimeError_):
            raise answer
        if isinstance(answer, BaseException):
            raise SetupError(f"exec in {cid}: {answer}")
        terminal = request.process.terminal
        expected = 1 if terminal else 2 + request.stdin
        if isinstance(answer, bool) or not isinstance(answer, int) or len(fds) != expected:
            raise SetupError(f"fork server: exec in {cid}: its helper failed")
        if terminal:
            return ExecSession(answer, control, fds[0], None, os.dup(fds[0]), True, cid)
        return ExecSession(answer, control, fds[0], fds[1], fds[2] if request.stdin else None,
                           False, cid)
    except BaseException:
        for fd in fds:
            _close(fd)
        raise


def _start_session(sock: socket.socket, request: SessionRequest, helpers: set[int]) -> None:
    cid = request.container_id
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError as e:
        sock.send(pickle.dumps(SetupError(f"exec in {cid}: socketpair: {e}")))
        return
    try:
        pid = os.fork()
    except OSError as e:
        ours.close()
        theirs.close()
        sock.send(pickle.dumps(SetupError(f"exec in {cid}: fork: {e}")))
        return
    if pid == 0:
        code = 0
        try:
            sock.close()
            ours.close()
            _session_helper(theirs, request)
        except BaseException:  # noqa: BLE001 - the caller sees its socket closed
            code = 1
        os._exit(code)
    helpers.add(pid)
    theirs.close()
    try:
        socket.send_fds(sock, [pickle.dumps(None)], [ours.fileno()])
    finally:
        ours.close()


def _session_helper(control: socket.socket, request: SessionRequest) -> None:
    """In the helper: start the process, hand its stdio over, then wait for its end
    (or the caller's word to kill it) and report its status."""
    import prctl

    # The exec'd process is re-parented to us: we reap it, and until then its PID
    # (and its process group's ID) cannot name another process.
    prctl.set_child_subreaper(1)
    try:
        pid, fds = _session_exec(request)
    except BaseException as e:  # noqa: BLE001 - the caller gets every failure
        _reap_all()
        control.send(_picklable(e))
        return
    try:
        socket.send_fds(control, [pickle.dumps(pid)], fds)
    except OSError:
        _kill_group(pid)  # nobody is left to talk to it
    finally:
        for fd in fds:
            os.close(fd)
    status = _watch(pid, control)
    try:
        control.send(pickle.dumps(status))
    except OSError:
        pass
    reap_children()


def _session_exec(request: SessionRequest) -> tuple[int, list[int]]:
    """Exec the process; its PID and the caller's ends: [master] with a terminal,
    else [stdout, stderr] and the stdin pipe's write end when asked for."""
    rt = _runtime(request.runtime_root, request.cgroup_parent)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    theirs: list[int] = []  # the child's ends: ours to close once it holds them
    ours: list[int] = []
    try:
        if request.process.terminal:
            from runtime.terminal import ConsoleListener

            with ConsoleListener() as listener:
                pid = rt.exec(request.container_id, request.process,
                              stdio=(devnull, devnull, devnull), console_socket=listener.path)
                try:
                    ours.append(listener.receive())
                except BaseException:
                    _kill_group(pid)
                    raise
            return pid, ours
        for _ in ("stdout", "stderr"):
            reader, writer = os.pipe2(os.O_CLOEXEC)
            ours.append(reader)
            theirs.append(writer)
        stdin = devnull
        if request.stdin:
            stdin, writer = os.pipe2(os.O_CLOEXEC)
            theirs.append(stdin)
            ours.append(writer)
        pid = rt.exec(request.container_id, request.process,
                      stdio=(stdin, theirs[0], theirs[1]))
        return pid, ours
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        os.close(devnull)
        for fd in theirs:
            os.close(fd)


def _watch(pid: int, control: socket.socket) -> ExitStatus:
    """Wait for our child ``pid`` to end, killing it when the caller asks or goes
    away; reap it and return how it ended."""
    pidfd = os.pidfd_open(pid)
    try:
        listening = True
        while True:
            ready = select.select([pidfd] + ([control] if listening else []), [], [])[0]
            if pidfd in ready:
                break
            try:
                word = control.recv(64)
            except OSError:
                word = b""
            if word == _KILL or not word:
                _kill_group(pid)
                listening = bool(word)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ExitStatus(128 + os.WTERMSIG(status), os.WTERMSIG(status))
    return ExitStatus(os.WEXITSTATUS(status))


def _kill_group(pid: int) -> None:
    """SIGKILL ``pid`` and its process group (it leads one: exec's stage 2 calls
    setsid), so a shell's children go with it. Only while ``pid`` is unreaped."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # no such group (it left it) or already gone
    signal_pid(pid, signal.SIGKILL)


def _reap_all() -> None:
    """Wait for every child: after a failed exec, its stage 2 (killed, or exiting after
    its report) is ours. Left unreaped, it would be a zombie of the container's PID
    namespace reaped by whoever inherits it, and the container's init, when it exits,
    waits for every process of its namespace to be reaped."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _picklable(error: BaseException) -> bytes:
    try:
        return pickle.dumps(error)
    except Exception:  # noqa: BLE001 - an exception that cannot cross: its words can
        return pickle.dumps(SetupError(str(error)))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _reap_ended(helpers: set[int]) -> None:
    for pid in list(helpers):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            helpers.discard(pid)
