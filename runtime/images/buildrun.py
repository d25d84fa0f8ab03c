"""RUN: one command in a container made by podium's own runtime, its changes kept.

The container's root is an overlay of the image's layers (read-only lower dirs)
under a fresh upper dir; whatever the command writes lands in the upper dir, which
becomes the step's layer. The init mounts the overlay inside the container's own
mount namespace, so nothing is ever mounted on the host, and the kernel drops
every mount when the container ends.

The network is a new, empty network namespace unless the build asks for the
host's (``network="host"``: no network namespace entry at all). stdout and stderr
are read line by line, each line handed to ``on_line``; the last lines are kept
for the error message of a failing step. Whatever happens — a failing command, an
exception, an interrupt — the container is deleted (init, cgroup, state).
"""

from __future__ import annotations

import os
import selectors
import signal
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from runtime.api import Runtime
from runtime.processes import reap
from runtime.spec.model import (
    DEFAULT_MOUNTS,
    Capabilities,
    ContainerConfig,
    Namespace,
    Overlay,
    Process,
    Root,
    User,
)

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TAIL_LINES = 10

# What a build container mounts: runc's default set.
BUILD_MOUNTS = DEFAULT_MOUNTS
# Mount points the runtime makes in an image that lacks them; not the step's doing.
MOUNT_POINTS = ("proc", "sys", "dev")


class RunResult(NamedTuple):
    exit_code: int  # 128+N after a death by signal N
    tail: tuple[str, ...]  # the last lines of output


class RunSpec(NamedTuple):
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: User
    network: str  # "none" or "host"


def container_config(spec: RunSpec, lower: list[Path], scratch: Path) -> ContainerConfig:
    """The build container: overlay root in ``scratch`` (upper/, work/, merged/)."""
    env = spec.env if any(e.startswith("PATH=") for e in spec.env) else (DEFAULT_PATH, *spec.env)
    namespaces = [Namespace(t) for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    if spec.network != "host":
        namespaces.append(Namespace("network"))
    overlay = Overlay(lower=tuple(lower), upper=scratch / "upper", work=scratch / "work")
    return ContainerConfig(
        oci_version="1.2.0",
        process=Process(args=spec.args, env=env, cwd=spec.cwd or "/", user=spec.user,
                        capabilities=Capabilities()),
        root=Root(path=scratch / "merged", overlay=overlay),
        hostname="podium-build",
        mounts=BUILD_MOUNTS,
        namespaces=tuple(namespaces),
    )


def run_step(runtime: Runtime, spec: RunSpec, lower: list[Path], scratch: Path,
             on_line: Callable[[str], None]) -> RunResult:
    """Run ``spec`` over ``lower`` (top first); its changes stay in ``scratch/upper``."""
    for name in ("upper", "work", "merged"):
        (scratch / name).mkdir(mode=0o755)
    if not lower:  # FROM scratch: overlayfs needs at least one lower dir
        (scratch / "empty").mkdir(mode=0o755)
        lower = [scratch / "empty"]
    config = container_config(spec, lower, scratch)
    container_id = f"build-{uuid.uuid4().hex[:12]}"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    reaped = False
    pid = 0
    try:
        try:
            state = runtime.create(container_id, config, stdio=(null, out_w, err_w))
        finally:
            for fd in (out_w, err_w, null):
                os.close(fd)
        pid = state.pid
        try:
            runtime.start(container_id)
            tail = _pump((out_r, err_r), on_line)
            _, status = os.waitpid(pid, 0)
            reaped = True
        finally:
            if not reaped and pid:
                _kill_and_reap(pid)
            runtime.delete(container_id, force=True)
    finally:
        for fd in (out_r, err_r):
            os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    return RunResult(128 - code if code < 0 else code, tail)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    reap(pid)


def _pump(fds: tuple[int, ...], on_line: Callable[[str], None]) -> tuple[str, ...]:
    """Hand every line of ``fds`` to ``on_line`` until all reach end of file."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    partial = {fd: b"" for fd in fds}
    with selectors.DefaultSelector() as sel:
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            for key, _ in sel.select():
                fd = int(key.fd)
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(fd)
                    if partial[fd]:
                        _emit(partial[fd], on_line, tail)
                    continue
                lines = (partial[fd] + data).split(b"\n")
                partial[fd] = lines.pop()
                for line in lines:
                    _emit(line, on_line, tail)
    return tuple(tail)


def _emit(raw: bytes, on_line: Callable[[str], None], tail: deque[str]) -> None:
    line = raw.decode("utf-8", "replace").rstrip("\r")
    tail.append(line)
    on_line(line)


def drop_mount_points(upper: Path, present_in_image: Callable[[str], bool]) -> None:
    """Remove the empty mount point dirs the runtime made in ``upper`` for a bare image."""
    for name in MOUNT_POINTS:
        path = upper / name
        if path.is_dir() and not path.is_symlink() and not present_in_image(name):
            try:
                path.rmdir()
            except OSError:
                pass  # the command put something there: it is the step's
