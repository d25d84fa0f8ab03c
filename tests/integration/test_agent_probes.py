"""Probes against a real busybox container: exec through the runtime, httpGet and
tcpSocket from the node into the container's network namespace, and a ProbeSet
driving restart and readiness decisions from real results."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.network import create_netns, remove_netns, run_in_netns
from agent.pods.probe_runners import (
    Check,
    ExecCheck,
    HTTPGetCheck,
    ProbeResult,
    ProbeRunner,
    Result,
    TCPSocketCheck,
    runtime_exec,
)
from agent.pods.probes import LIVENESS, READINESS, STARTUP, ProbeSet, ProbeSpec
from runtime.api import Runtime
from runtime.spec import ContainerConfig, convert, default_config
from runtime.state import Status
from tests.conftest import need, need_root

pytestmark = pytest.mark.root

SERVE = ("mkdir -p /tmp/www && echo hello > /tmp/www/index.html && "
         "httpd -f -p 8080 -h /tmp/www & exec sleep 600")
READY_FILE = ExecCheck(("sh", "-c", "test -f /tmp/ready"))
INDEX = HTTPGetCheck(8080, "/index.html")


@dataclass
class Box:
    """A running busybox container serving HTTP on :8080 in its own network namespace."""

    rt: Runtime
    id: str
    config: ContainerConfig
    netns: Path
    pid: int

    def sh(self, script: str) -> int:
        return runtime_exec(self.rt, self.id, self.config.process)(("sh", "-c", script), 10.0)

    def probe(self, check: Check, timeout: float = 1.0) -> ProbeResult:
        """What the agent's prober would see: exec via the runtime, network from the
        node's side (here: a thread inside the pod's network namespace)."""
        runner = ProbeRunner("127.0.0.1", runtime_exec(self.rt, self.id, self.config.process))
        if isinstance(check, ExecCheck):
            return runner(check, timeout)
        return run_in_netns(self.netns, lambda: runner(check, timeout))


@pytest.fixture
def box(tmp_dir: Path, cgroup_parent: str, busybox_rootfs: Path) -> Iterator[Box]:
    need_root()
    need(any((busybox_rootfs / d / "httpd").is_symlink() for d in ("bin", "sbin", "usr/sbin")),
         "busybox without httpd")
    netns = tmp_dir / "ptprobe"
    create_netns(netns)
    rt = Runtime(root=tmp_dir / "state", cgroup_parent=cgroup_parent)
    cid = f"probe-{os.getpid()}"
    pid = 0
    try:
        run_in_netns(netns, lambda: subprocess.run(["ip", "link", "set", "lo", "up"],
                                                   check=True, timeout=10))
        data = default_config(["sh", "-c", SERVE])
        data["root"]["path"] = str(busybox_rootfs)
        data["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=1777"]})
        data["linux"]["namespaces"] = [
            {"type": "network", "path": str(netns)} if ns["type"] == "network" else ns
            for ns in data["linux"]["namespaces"]
        ]
        cfg = convert(data, busybox_rootfs).config
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            rt.create(cid, cfg, stdio=(devnull, devnull, devnull))
        finally:
            os.close(devnull)
        pid = rt.start(cid).pid
        here = Box(rt, cid, cfg, netns, pid)
        deadline = time.monotonic() + 10
        while here.probe(TCPSocketCheck(8080)).result is not Result.SUCCESS:
            assert time.monotonic() < deadline, "httpd did not come up in the container"
            time.sleep(0.05)
        yield here
    finally:
        for state in rt.containers():
            rt.delete(state.id, force=True)
        if pid:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        remove_netns(netns)


def test_exec_probe_follows_a_file_in_the_container(box: Box) -> None:
    failed = box.probe(READY_FILE)
    assert failed == ProbeResult(Result.FAILURE, f"command {list(READY_FILE.command)} "
                                                 "exited with 1")
    assert box.sh("touch /tmp/ready") == 0
    assert box.probe(READY_FILE) == ProbeResult(Result.SUCCESS)
    assert box.sh("rm /tmp/ready") == 0
    assert box.probe(READY_FILE).result is Result.FAILURE


def test_exec_probe_timeout_kills_the_command(box: Box) -> None:
    before = set(box.rt.ps(box.id))
    started = time.monotonic()
    outcome = box.probe(ExecCheck(("sleep", "30")), timeout=0.5)
    assert outcome == ProbeResult(Result.FAILURE, "command ['sleep', '30'] timed out after 0.5s")
    assert time.monotonic() - started < 5
    assert set(box.rt.ps(box.id)) == before  # killed, reaped, gone from the cgroup


def test_http_and_tcp_probes_reach_the_pods_namespace(box: Box) -> None:
    assert box.probe(INDEX) == ProbeResult(Result.SUCCESS)
    missing = box.probe(HTTPGetCheck(8080, "/nope"))
    assert missing.result is Result.FAILURE and "statuscode: 404" in missing.message
    assert box.probe(TCPSocketCheck(8080)).result is Result.SUCCESS
    refused = box.probe(TCPSocketCheck(9000))
    assert refused == ProbeResult(Result.FAILURE,
                                  "dial tcp 127.0.0.1:9000: connect: connection refused")


def test_probe_set_drives_readiness_and_restart(box: Box) -> None:
    probes = ProbeSet({
        STARTUP: ProbeSpec(STARTUP, TCPSocketCheck(8080), period=1.0, failure_threshold=5),
        LIVENESS: ProbeSpec(LIVENESS, INDEX, period=1.0, failure_threshold=2),
        READINESS: ProbeSpec(READINESS, READY_FILE, period=1.0, failure_threshold=1),
    }, started_at=0.0)
    changes = probes.tick(0.0, box.probe)
    assert probes.started and changes.started_changed and not probes.ready
    assert [run.kind for run in changes.runs] == [STARTUP, LIVENESS, READINESS]

    box.sh("touch /tmp/ready")
    changes = probes.tick(1.0, box.probe)
    assert changes.ready_changed and changes.ready

    box.sh("rm /tmp/www/index.html")
    changes = probes.tick(2.0, box.probe)
    assert not changes.restart and changes.runs[0].result.result is Result.FAILURE
    changes = probes.tick(3.0, box.probe)
    assert changes.restart and changes.restart_message.startswith(
        "Liveness probe failed 2 times in a row: HTTP probe failed with statuscode: 404")
    assert changes.ready_changed and not changes.ready
    assert box.rt.state(box.id).status is Status.RUNNING  # acting on it is the worker's job
