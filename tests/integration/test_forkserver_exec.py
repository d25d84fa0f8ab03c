"""The fork server's exec request: a process run in a running container, waited for
with a timeout, killed on it, and reaped, while the caller runs threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

from runtime.api import Runtime
from runtime.errors import ContainerNotFound
from runtime.forkserver import ForkServer, ShimRequest
from runtime.shim import exit_record
from runtime.spec import ContainerConfig
from runtime.spec.model import Process
from tests.support.containers import command_config


def start(rt: Runtime, fork_server: ForkServer, rootfs: Path, cid: str) -> ContainerConfig:
    cfg = command_config(rootfs, "sleep", "600")
    fork_server.spawn_shim(ShimRequest(rt.store.root, rt.cgroup_parent, cid, cfg))
    return cfg


def sh(cfg: ContainerConfig, script: str) -> Process:
    return cfg.process._replace(args=("sh", "-c", script))


def test_exec_answers_the_exit_code(rt: Runtime, fork_server: ForkServer,
                                    busybox_rootfs: Path) -> None:
    cfg = start(rt, fork_server, busybox_rootfs, "fx-code")
    root, parent = rt.store.root, rt.cgroup_parent
    assert fork_server.exec_and_wait(root, parent, "fx-code", sh(cfg, "true"), 5) == 0
    assert fork_server.exec_and_wait(root, parent, "fx-code", sh(cfg, "exit 3"), 5) == 3
    # It runs inside the container: its PID namespace, its root.
    assert fork_server.exec_and_wait(root, parent, "fx-code",
                                     sh(cfg, "test $(cat /proc/1/comm) = sleep"), 5) == 0
    assert fork_server.exec_and_wait(root, parent, "fx-code", sh(cfg, "kill -9 $$"), 5) == 137
    assert exit_record(rt, "fx-code") is None  # the container itself runs on


def test_exec_is_killed_and_reaped_on_timeout(rt: Runtime, fork_server: ForkServer,
                                              busybox_rootfs: Path) -> None:
    cfg = start(rt, fork_server, busybox_rootfs, "fx-slow")
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="after 0.5s"):
        fork_server.exec_and_wait(rt.store.root, rt.cgroup_parent, "fx-slow",
                                  sh(cfg, "exec sleep 77"), 0.5)
    assert time.monotonic() - began < 5
    # Killed, and no zombie left under the server (or anywhere). The container's
    # shim is the server's child too, and stays: it runs as long as the container.
    shim = psutil.Process(rt.state("fx-slow").pid).parent()
    assert shim is not None

    def helpers() -> list[psutil.Process]:
        return [c for c in psutil.Process(fork_server.pid).children() if c.pid != shim.pid]

    deadline = time.monotonic() + 5
    while any(p.info["cmdline"] == ["sleep", "77"]
              for p in psutil.process_iter(["cmdline"])):
        assert time.monotonic() < deadline, "the timed-out process still exists"
        time.sleep(0.05)
    children = helpers()
    deadline = time.monotonic() + 5
    while [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]:
        assert time.monotonic() < deadline, children
        time.sleep(0.05)
    time.sleep(1.0)  # the server reaps its helpers on its next round
    assert not helpers()


def test_a_slow_exec_holds_up_no_other_request(rt: Runtime, fork_server: ForkServer,
                                               busybox_rootfs: Path) -> None:
    cfg = start(rt, fork_server, busybox_rootfs, "fx-par")
    results: list[object] = []

    def slow() -> None:
        try:
            results.append(fork_server.exec_and_wait(rt.store.root, rt.cgroup_parent, "fx-par",
                                                     sh(cfg, "sleep 2; exit 4"), 10))
        except Exception as e:  # noqa: BLE001
            results.append(e)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.2)
    began = time.monotonic()
    assert fork_server.exec_and_wait(rt.store.root, rt.cgroup_parent, "fx-par",
                                     sh(cfg, "exit 5"), 5) == 5
    assert time.monotonic() - began < 1.5
    thread.join(timeout=15)
    assert results == [4]


def test_exec_in_a_missing_container_raises_its_error(rt: Runtime, fork_server: ForkServer,
                                                       busybox_rootfs: Path) -> None:
    with pytest.raises(ContainerNotFound, match="nope"):
        fork_server.exec_and_wait(rt.store.root, rt.cgroup_parent, "nope",
                                  Process(args=("true",)), 5)
