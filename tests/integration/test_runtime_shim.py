"""How a shim is laid out: forked from a fork server that is a fresh interpreter,
in a session of its own, reaped by the server when it ends and outliving it, the
container's init its only child once the container started (the short-lived child
that created it has exited), its report read from a pipe."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from runtime.api import Runtime
from runtime.errors import InvalidIDError, SetupError
from runtime.forkserver import ForkServer, ShimRequest
from runtime.shim import exit_record, spawn_shim
from tests.support.containers import command_config


def wait_for_exit_record(rt: Runtime, cid: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while (record := exit_record(rt, cid)) is None:
        assert time.monotonic() < deadline, f"{cid}: no exit record"
        time.sleep(0.02)
    return record


def test_the_fork_server_is_a_fresh_interpreter(fork_server: ForkServer) -> None:
    process = psutil.Process(fork_server.pid)
    assert process.ppid() == os.getpid()
    assert process.cmdline()[1] == "-c"  # not a fork of this (threaded, test) process


def test_a_shim_from_the_server_has_its_own_session_and_is_the_inits_only_parent(
        rt: Runtime, fork_server: ForkServer, busybox_rootfs: Path, tmp_dir: Path) -> None:
    log = tmp_dir / "sh.log"
    state = fork_server.spawn_shim(ShimRequest(rt.store.root, rt.cgroup_parent, "sh-tree",
                                               command_config(busybox_rootfs, "sh", "-c",
                                                      "echo up; sleep 600"), log_path=log))
    init = psutil.Process(state.pid)
    shim = init.parent()
    assert shim is not None and shim.pid not in (fork_server.pid, os.getpid())
    assert shim.ppid() == fork_server.pid  # forked once, by the server
    assert os.getsid(shim.pid) == shim.pid != os.getsid(0)  # away from our terminal
    deadline = time.monotonic() + 10
    while [c.pid for c in shim.children()] != [state.pid]:  # the creating child is gone
        assert time.monotonic() < deadline, [c.pid for c in shim.children()]
        time.sleep(0.02)
    while "stdout F up" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the shim logged nothing"
        time.sleep(0.02)
    rt.kill("sh-tree", 9)
    record = wait_for_exit_record(rt, "sh-tree")
    assert record["exitCode"] == 137 and record["signal"] == 9
    rt.delete("sh-tree")
    while psutil.pid_exists(shim.pid) and shim.status() == psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline + 5, "the server left its ended shim a zombie"
        time.sleep(0.05)
    assert not psutil.pid_exists(shim.pid)


def test_shims_outlive_their_server(rt: Runtime, busybox_rootfs: Path) -> None:
    server = ForkServer.start()
    try:
        state = server.spawn_shim(ShimRequest(rt.store.root, rt.cgroup_parent, "sh-left",
                                              command_config(busybox_rootfs, "sleep", "600")))
        shim = psutil.Process(state.pid).parent()
        assert shim is not None and shim.ppid() == server.pid
    finally:
        server.close()  # returns once the server has exited: it does not wait for shims
    assert not psutil.pid_exists(server.pid)
    assert shim.is_running() and shim.status() != psutil.STATUS_ZOMBIE
    assert psutil.Process(state.pid).status() != psutil.STATUS_ZOMBIE
    rt.kill("sh-left", 9)
    assert wait_for_exit_record(rt, "sh-left")["signal"] == 9
    rt.delete("sh-left")


def test_the_server_reports_a_failed_start_and_a_bad_id(
        rt: Runtime, fork_server: ForkServer, busybox_rootfs: Path) -> None:
    with pytest.raises(SetupError, match="exec: /nope"):
        fork_server.spawn_shim(ShimRequest(rt.store.root, rt.cgroup_parent, "sh-nope",
                                           command_config(busybox_rootfs, "/nope")))
    assert rt.containers() == []
    with pytest.raises(InvalidIDError):
        fork_server.spawn_shim(ShimRequest(rt.store.root, rt.cgroup_parent, "../bad",
                                           command_config(busybox_rootfs, "true")))


def test_spawn_shim_in_process_records_the_exit_and_logs_in_the_state_dir(
        rt: Runtime, busybox_rootfs: Path) -> None:
    state = spawn_shim(rt, "sh-local", config=command_config(busybox_rootfs, "sh", "-c",
                                                     "echo out; echo err >&2; exit 5"))
    assert state.pid > 0
    record = wait_for_exit_record(rt, "sh-local")
    assert record["exitCode"] == 5 and record["oomKilled"] is False
    text = (rt.store.dir("sh-local") / "container.log").read_text()
    assert " stdout F out\n" in text and " stderr F err\n" in text
    rt.delete("sh-local")
