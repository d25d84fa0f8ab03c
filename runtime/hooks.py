"""OCI hooks: the config's programs, run at fixed points of a container's life with
the container's state JSON (``State.oci()``) on stdin.

    point            run by                       namespaces  status    if it fails
    prestart         create's caller, while the   runtime     creating  create fails, all undone
    createRuntime      init waits before pivot    runtime     creating  create fails, all undone
    createContainer  the init, before pivot_root  container   creating  create fails, all undone
    startContainer   the init, once start opened  container   created   start fails, init exits
                       exec.fifo, before execve
    poststart        start, before it returns     runtime     running   a warning
    poststop         delete, once all is removed  runtime     stopped   a warning

Paths resolve where the spec says: createContainer's in the runtime's tree (before
pivot_root the init still sees it), startContainer's in the container's root.

The create point costs one round trip on the set-up channel, made only when a
prestart, createRuntime, createContainer or startContainer hook exists: the init
sends ``{"hooks": true}`` and blocks; the caller runs prestart and createRuntime,
then writes the state as one JSON line on the init's "go" pipe. The init learns its
host PID and the container's ID and bundle from that line.

poststart and poststop hooks are kept in ``hooks.json`` in the state directory at
create time, because config.json may change afterwards and must not matter.

The init imports this module before it forks (after pivot_root there is nothing
to import from), and every command imports it through ``runtime.create``: it
imports only what the runtime has loaded already.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runtime import channel
from runtime.errors import SetupError
from runtime.spec.model import Hook, Hooks

HOOKS_FILE = "hooks.json"
OUTPUT_TAIL = 4096  # bytes of a hook's output kept for its error message
TAIL_LINES = 3

# Python ignores these; a hook is an ordinary program and gets the defaults back.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

Warn = Callable[[str], None]


def warn_stderr(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


# -- running hooks ---------------------------------------------------------------


def run_hook(hook: Hook, state: bytes, where: str) -> None:
    """Run one hook in the current namespaces with ``state`` on its stdin. Raises
    SetupError if it cannot start, exits non-zero, or outlives its timeout (then it
    is killed, with its process group). ``where`` names it: "hooks.poststop[1]"."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            hook.path, list(hook.args) or [hook.path], _environ(hook.env),
            file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, out_w, 2)],
            # Its own process group, so a timeout also ends what it started.
            setpgroup=0, setsigmask=(), setsigdef=_DEFAULT_SIGNALS)
    except OSError as e:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
        raise SetupError(f"{where}: {hook.path}: {_reason(e)}") from None
    os.close(in_r)
    os.close(out_w)
    try:
        timed_out, output = _feed_and_wait(pid, in_w, out_r, state, hook.timeout)
    except BaseException:
        _kill_group(pid)
        raise
    finally:
        os.close(out_r)
    if timed_out:
        _kill_group(pid)
        raise SetupError(f"{where}: {hook.path} did not finish within its timeout of "
                         f"{hook.timeout}s: killed{_tail(output)}")
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        raise SetupError(f"{where}: {hook.path}: its exit status was lost "
                         "(something else reaped it)") from None
    code = os.waitstatus_to_exitcode(status)
    if code > 0:
        raise SetupError(f"{where}: {hook.path} exited with status {code}{_tail(output)}")
    if code < 0:
        raise SetupError(f"{where}: {hook.path} was killed by "
                         f"{signal.Signals(-code).name}{_tail(output)}")


def _feed_and_wait(pid: int, in_w: int, out_r: int, state: bytes, timeout: int | None
                   ) -> tuple[bool, bytes]:
    """Write ``state`` to the hook's stdin and collect its output until it exits or the
    timeout passes; returns (timed out, the output's tail). Closes ``in_w``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pidfd = os.pidfd_open(pid)
    pending = state
    tail = b""
    try:
        os.set_blocking(in_w, False)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(out_r, select.POLLIN)
        poller.register(in_w, select.POLLOUT)
        while True:
            wait_ms = -1
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True, tail
                wait_ms = int(left * 1000) + 1
            for fd, _ in poller.poll(wait_ms):
                if fd == pidfd:
                    return False, (tail + _drain(out_r))[-OUTPUT_TAIL:]
                if fd == out_r:
                    chunk = os.read(out_r, 65536)
                    if not chunk:
                        poller.unregister(out_r)
                    tail = (tail + chunk)[-OUTPUT_TAIL:]
                elif fd == in_w:
                    try:
                        pending = pending[os.write(in_w, pending):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it will not read its stdin: fine
                        pending = b""
                    if not pending:
                        # EOF on its stdin: a hook reading to the end may go on.
                        poller.unregister(in_w)
                        os.close(in_w)
                        in_w = -1
    finally:
        os.close(pidfd)
        if in_w >= 0:
            os.close(in_w)


def _drain(fd: int) -> bytes:
    """What the hook wrote before it exited; a child it left may hold the pipe open."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data = (data + chunk)[-OUTPUT_TAIL:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _environ(env: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


def _tail(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line][-TAIL_LINES:]
    return ": " + " | ".join(lines) if lines else ""


def run_hooks(point: str, hooks: tuple[Hook, ...], state: Mapping[str, Any]) -> None:
    """Run a point's hooks in order; the first failure stops them and is raised."""
    data = json.dumps(state).encode()
    for i, hook in enumerate(hooks):
        run_hook(hook, data, f"hooks.{point}[{i}]")


def run_hooks_warning(point: str, hooks: tuple[Hook, ...], state: Mapping[str, Any],
                      warn: Warn = warn_stderr) -> None:
    """Run a point's hooks in order; a failure is a warning and the rest still run
    (the spec's rule for poststart and poststop)."""
    data = json.dumps(state).encode()
    for i, hook in enumerate(hooks):
        try:
            run_hook(hook, data, f"hooks.{point}[{i}]")
        except SetupError as e:
            warn(str(e))


# -- the create and start points -------------------------------------------------


def init_waits_for_caller(hooks: Hooks) -> bool:
    """Whether the init makes the create-point round trip (see the module docstring)."""
    return bool(hooks.prestart or hooks.create_runtime or hooks.create_container
                or hooks.start_container)


def caller_create_point(hooks: Hooks, state: Mapping[str, Any], go_fd: int) -> None:
    """In create's caller, when the init waits before pivot_root: run prestart then
    createRuntime, then let the init go on with the state it needs."""
    run_hooks("prestart", hooks.prestart, state)
    run_hooks("createRuntime", hooks.create_runtime, state)
    data = (json.dumps(state) + "\n").encode()
    while data:
        data = data[os.write(go_fd, data):]


def init_create_point(hooks: Hooks, sync_fd: int, go_fd: int) -> dict[str, Any] | None:
    """In the init, once its namespaces and mounts exist, before pivot_root: wait while
    the caller runs its hooks, then run createContainer. Returns the container's state
    (for startContainer), or None when no hook needs the round trip."""
    if not init_waits_for_caller(hooks):
        return None
    channel.send(sync_fd, hooks=True)
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(go_fd, 65536)
        if not chunk:
            raise SetupError("create ended before the createRuntime hooks let the init go on")
        line += chunk
    state: dict[str, Any] = json.loads(line)
    run_hooks("createContainer", hooks.create_container, state)
    return state


def init_start_point(hooks: Hooks, state: dict[str, Any] | None, fifo_fd: int) -> None:
    """In the init, once ``start`` opened exec.fifo: run startContainer. On failure
    the init tells ``start`` through the fifo (``1`` and the message) and exits, which
    stops the container as the spec requires; it never returns then."""
    if state is None or not hooks.start_container:
        return
    try:
        run_hooks("startContainer", hooks.start_container, {**state, "status": "created"})
    except SetupError as e:
        # One write below PIPE_BUF, so start reads it whole.
        os.write(fifo_fd, b"1" + str(e).encode()[:4000])
        os._exit(1)


# -- hooks kept for start and delete ---------------------------------------------


def save(state_dir: Path, hooks: Hooks) -> None:
    """Keep the poststart and poststop hooks for ``start`` and ``delete``."""
    kept = {field: [h._asdict() for h in getattr(hooks, field)]
            for field in ("poststart", "poststop") if getattr(hooks, field)}
    if kept:
        (state_dir / HOOKS_FILE).write_text(json.dumps(kept))


def load(state_dir: Path) -> Hooks:
    """The hooks ``save`` kept; none if it kept none."""
    try:
        data = json.loads((state_dir / HOOKS_FILE).read_text())
    except FileNotFoundError:
        return Hooks()

    def hooks(field: str) -> tuple[Hook, ...]:
        return tuple(Hook(path=h["path"], args=tuple(h["args"]), env=tuple(h["env"]),
                          timeout=h["timeout"]) for h in data.get(field, ()))

    return Hooks(poststart=hooks("poststart"), poststop=hooks("poststop"))
