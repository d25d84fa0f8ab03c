"""Containers from a test, as a caller of the runtime library: a config for a command,
and a run to the end."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.api import Runtime
from runtime.spec import convert, default_config
from runtime.spec.model import ContainerConfig


def command_config(rootfs: Path, *args: str) -> ContainerConfig:
    """The default config running ``args`` on ``rootfs``."""
    data = default_config(list(args))
    data["root"]["path"] = str(rootfs)
    return convert(data, rootfs).config


def run_to_completion(rt: Runtime, cid: str, cfg: ContainerConfig) -> tuple[int, str]:
    """create, start, collect stdout and stderr, reap, delete; returns (exit code or
    -signal, combined output). The test process is the init's parent (and subreaper)."""
    r, w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        rt.create(cid, cfg, stdio=(devnull, w, w))
    finally:
        os.close(w)
        os.close(devnull)
    state = rt.start(cid)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(state.pid, 0)
    rt.delete(cid)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return code, b"".join(chunks).decode()
