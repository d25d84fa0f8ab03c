"""``podium up`` / ``podium down``: the command as users run it, on the real kernel.

The cluster is isolated from the host's: every directory under the test's, the
scheduler on a unix socket, the agent in a network namespace the test made, on a
bridge and cgroup parent the leak check watches, so that check proves ``down``
leaves no process, mount, cgroup, network device or nftables table behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.network import create_netns, remove_netns
from client.cluster_up import alive, read_pid
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, pod_pb2
from runtime.api import Runtime
from scheduler.objects import wrap
from tests.conftest import need, need_root
from tests.support.nodes import REPO, import_busybox, wait_for

pytestmark = pytest.mark.root

IMAGE = "podium-test/busybox:up"
BRIDGE = "ptup0"


def podium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from client.cli import main; sys.exit(main())",
         *args], cwd=REPO, capture_output=True, text=True, timeout=120)


class Machine:
    """Where one isolated ``podium up`` keeps everything."""

    def __init__(self, tmp: Path, cgroup_parent: str) -> None:
        self.tmp = tmp
        self.images = tmp / "images"
        self.netns = tmp / "netns"
        self.run_dir = tmp / "run"
        self.logs = tmp / "logs"
        self.cgroup_parent = cgroup_parent
        self.address = f"unix:{tmp / 'scheduler.sock'}"

    def up_args(self, listen: str | None = None) -> list[str]:
        t = self.tmp
        return ["up", "--data", str(t / "data"), "--listen", listen or self.address,
                "--log-dir", str(self.logs), "--run-dir", str(self.run_dir),
                "--agent-listen", f"unix:{t / 'agent.sock'}", "--bridge", BRIDGE,
                "--cgroup-parent", self.cgroup_parent, "--image-store", str(self.images),
                "--manifests", str(t / "manifests"), "--node-ip", "127.0.0.1",
                "--netns", str(self.netns), "--timeout", "60"]

    def pids(self) -> list[int]:
        found = (read_pid(self.run_dir / "up" / f"{n}.pid") for n in ("scheduler", "agent"))
        return [p for p in found if p is not None]

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))


@pytest.fixture
def machine(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Machine]:
    need_root()
    need(shutil.which("nft") is not None, "needs nft (apt-get install nftables)")
    need(shutil.which("nsenter") is not None, "needs nsenter (util-linux)")
    m = Machine(tmp_dir, cgroup_parent)
    m.images.mkdir()
    import_busybox(m.images, busybox_rootfs, IMAGE)
    create_netns(m.netns)
    try:
        yield m
    finally:
        podium("down", "--run-dir", str(m.run_dir))  # after a failure half-way
        remove_netns(m.netns)


def sleeper() -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name = "sleeper"
    pod.metadata.namespace = "default"
    pod.spec.termination_grace_period_seconds = 1
    pod.spec.containers.add(name="main", image=IMAGE, image_pull_policy="IfNotPresent",
                            command=["sh", "-c", "while true; do sleep 1; done"])
    return pod


def pod_running(api: cluster_pb2_grpc.ClusterServiceStub) -> bool:
    items = api.List(cluster_pb2.ListRequest(kind="Pod"), timeout=5).items
    return any(i.pod.status.phase == "Running" for i in items)


def test_up_runs_pods_twice_says_so_and_down_leaves_nothing(machine: Machine) -> None:
    m = machine
    started = podium(*m.up_args())
    assert started.returncode == 0, started.stderr + m.log_text()
    assert "is Ready" in started.stdout and "podium get nodes" in started.stdout
    pids = m.pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)

    channel = grpc.insecure_channel(m.address)
    try:
        api = cluster_pb2_grpc.ClusterServiceStub(channel)
        nodes = api.List(cluster_pb2.ListRequest(kind="Node"), timeout=5).items
        assert [n.node.metadata.name for n in nodes] == [f"{os.uname().nodename}-{BRIDGE}"]
        api.Apply(cluster_pb2.ApplyRequest(object=wrap(sleeper())), timeout=5)
        wait_for("the pod Running", lambda: pod_running(api), 60, m.log_text)
    finally:
        channel.close()
    rt = Runtime(root=m.run_dir / "runtime", cgroup_parent=m.cgroup_parent)
    assert len(rt.containers()) == 1

    again = podium(*m.up_args())
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert m.pids() == pids

    stopped = podium("down", "--run-dir", str(m.run_dir))
    assert stopped.returncode == 0, stopped.stderr + m.log_text()
    assert "removed 1 pod" in stopped.stdout and "podium is down" in stopped.stdout
    assert not any(alive(p) for p in pids)
    assert rt.containers() == []
    assert not (m.run_dir / "up").exists()

    twice = podium("down", "--run-dir", str(m.run_dir))
    assert twice.returncode == 0, twice.stderr
    assert "not running" in twice.stdout
    # The autouse leak check then finds no process, mount, cgroup, device or table.


def test_down_after_the_daemons_were_killed_still_removes_the_pods(machine: Machine) -> None:
    m = machine
    started = podium(*m.up_args())
    assert started.returncode == 0, started.stderr + m.log_text()
    channel = grpc.insecure_channel(m.address)
    try:
        api = cluster_pb2_grpc.ClusterServiceStub(channel)
        api.Apply(cluster_pb2.ApplyRequest(object=wrap(sleeper())), timeout=5)
        wait_for("the pod Running", lambda: pod_running(api), 60, m.log_text)
    finally:
        channel.close()
    rt = Runtime(root=m.run_dir / "runtime", cgroup_parent=m.cgroup_parent)
    assert len(rt.containers()) == 1
    for pid in m.pids():
        os.kill(pid, signal.SIGKILL)
    wait_for("the daemons gone", lambda: not any(alive(p) for p in m.pids()))

    stopped = podium("down", "--run-dir", str(m.run_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert "removed 1 pod" in stopped.stdout and "stopped" not in stopped.stdout
    assert rt.containers() == []


def test_up_with_a_daemon_that_fails_stops_the_other_and_shows_its_log(
        machine: Machine) -> None:
    m = machine
    # The scheduler cannot listen in a directory that does not exist: it exits.
    failed = podium(*m.up_args(listen=f"unix:{m.tmp / 'missing' / 'scheduler.sock'}"))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    first, *rest = failed.stderr.splitlines()
    assert first.startswith("podium up: podium-scheduler exited with code"), failed.stderr
    assert rest and all(line.startswith("  | ") for line in rest), failed.stderr
    assert m.pids() == []
    assert "not running" in podium("down", "--run-dir", str(m.run_dir)).stdout


def test_up_and_down_need_root(tmp_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from client.cli import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for command in ("up", "down"):
        assert main([command, "--run-dir", str(tmp_dir / "run")]) == 1
        assert capsys.readouterr().err.startswith(f"podium {command}: needs root")
    assert not (tmp_dir / "run").exists()
