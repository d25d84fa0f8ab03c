"""podium-agent as a process on the real kernel: a static pod from a manifest runs,
its logs and stats are served over gRPC, the agent is SIGKILLed and restarted and
re-adopts the running container (same PID), and removing the manifest removes the pod.

The agent runs with ``nsenter --net`` inside a test "node" network namespace
(``ptnode``), so its bridge, veths and nftables table never touch the host's
network; it listens on a unix socket under the test's directory, which a client
in this process reaches whatever network namespace it is in.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.network import create_netns, remove_netns
from proto.podium.v1 import agent_pb2, agent_pb2_grpc, pod_pb2
from runtime.api import Runtime
from runtime.images import ImageStore, import_rootfs
from tests.conftest import need, need_root

pytestmark = pytest.mark.root

IMAGE = "podium-test/busybox:agent"
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

MANIFEST = f"""\
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo hello-agent; echo second-line; while true; do sleep 1; done"]
"""


@dataclass
class Node:
    tmp: Path
    netns: Path
    root: Path
    manifests: Path
    sock: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.tmp / "agent.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=log)
        log.close()

    def agent_log(self) -> str:
        return (self.tmp / "agent.log").read_text(errors="replace")


@pytest.fixture
def node(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Node]:
    need_root()
    need(shutil.which("nft") is not None, "needs nft (apt-get install nftables)")
    need(shutil.which("nsenter") is not None, "needs nsenter (util-linux)")
    netns = tmp_dir / "ptnode"
    create_netns(netns)
    store = ImageStore(tmp_dir / "images")
    tarball = tmp_dir / "busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    import_rootfs(store, tarball, IMAGE)
    root, manifests, sock = tmp_dir / "root", tmp_dir / "manifests", tmp_dir / "agent.sock"
    manifests.mkdir()
    argv = ["nsenter", f"--net={netns}", sys.executable, "-m", "agent.cli",
            "--manifests", str(manifests), "--listen", f"unix:{sock}", "--root", str(root),
            "--pod-cidr", "10.88.11.0/24", "--bridge", "ptbr0", "--cgroup-parent",
            cgroup_parent, "--node-name", "ptnode", "--image-store", str(tmp_dir / "images")]
    n = Node(tmp_dir, netns, root, manifests, sock, argv)
    try:
        yield n
    finally:
        if n.proc is not None and n.proc.poll() is None:
            n.proc.kill()
            n.proc.wait()
        rt = Runtime(root=root / "runtime", cgroup_parent=cgroup_parent)
        for state in rt.containers():
            rt.delete(state.id, force=True)
        netns_dir = root / "netns"
        for name in os.listdir(netns_dir) if netns_dir.is_dir() else []:
            remove_netns(netns_dir / name)
        remove_netns(netns)


def wait_for(what: str, probe: Callable[[], T | None], node: Node, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            found = None
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; agent log:\n{node.agent_log()}")
        assert node.proc is None or node.proc.poll() is None, \
            f"the agent exited: {node.agent_log()}"
        time.sleep(0.1)


def serving(channel: grpc.Channel) -> bool:
    answer = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="podium.v1.AgentService"), timeout=2)
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def running_pod(stub: agent_pb2_grpc.AgentServiceStub) -> pod_pb2.Pod | None:
    pods = stub.ListPods(agent_pb2.ListPodsRequest(), timeout=5).pods
    if len(pods) == 1 and pods[0].status.phase == "Running":
        return pods[0]
    return None


def logs(stub: agent_pb2_grpc.AgentServiceStub, **request: Any) -> bytes:
    answers = stub.Logs(agent_pb2.LogsRequest(namespace="default", pod="hello", **request),
                        timeout=10)
    return b"".join(a.data for a in answers)


def test_agent_runs_serves_readopts_and_removes_a_static_pod(node: Node,
                                                              cgroup_parent: str) -> None:
    (node.manifests / "hello.yaml").write_text(MANIFEST)
    node.start()
    channel = grpc.insecure_channel(f"unix:{node.sock}")
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    try:
        wait_for("health SERVING", lambda: serving(channel), node)
        pod = wait_for("the pod Running", lambda: running_pod(stub), node)
        cs = pod.status.container_statuses[0]
        assert cs.state.WhichOneof("state") == "running"
        assert pod.status.pod_ip.startswith("10.88.11.")
        container_id = cs.container_id.removeprefix("podium://")
        rt = Runtime(root=node.root / "runtime", cgroup_parent=cgroup_parent)
        pid = rt.state(container_id).pid

        output = wait_for("the pod's logs",
                          lambda: (lambda out: out if b"second-line" in out else None)(
                              logs(stub)), node)
        assert output == b"hello-agent\nsecond-line\n"
        assert logs(stub, tail_lines=1) == b"second-line\n"
        stamped = logs(stub, timestamps=True).splitlines()
        assert stamped[0].endswith(b" hello-agent") and stamped[0][:4].isdigit()
        follow: Any = stub.Logs(agent_pb2.LogsRequest(namespace="default", pod="hello",
                                                      follow=True), timeout=10)
        assert next(follow).data == b"hello-agent\n"
        follow.cancel()

        stats = stub.Stats(agent_pb2.StatsRequest(), timeout=10)
        assert stats.node.node_name == "ptnode"
        assert stats.node.memory.limit_bytes > 0 and stats.node.process_count > 0
        assert stats.node.cpu.usage_core_nanoseconds > 0
        assert stats.node.status.allocatable["pods"] and any(
            c.type == "Ready" and c.status == "True" for c in stats.node.status.conditions)
        figures = stats.pods[0].containers[0]
        assert figures.name == "main" and figures.pids.current >= 1
        assert figures.memory.usage_bytes > 0

        with pytest.raises(grpc.RpcError) as exec_error:  # the first message must be start
            list(stub.Exec(iter([agent_pb2.ExecRequest()]), timeout=5))
        assert exec_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # SIGKILL: the container keeps running, and a new agent adopts it.
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        time.sleep(0.5)
        assert rt.state(container_id).pid == pid
        os.kill(pid, 0)
        node.start()
        again = wait_for("the adopted pod Running", lambda: running_pod(stub), node)
        cs = again.status.container_statuses[0]
        assert cs.container_id == f"podium://{container_id}"
        assert cs.restart_count == 0
        assert rt.state(container_id).pid == pid
        assert b"hello-agent" in logs(stub)
        assert f"adopted {container_id}" in node.agent_log()

        # Removing the manifest removes the pod and everything of it.
        (node.manifests / "hello.yaml").unlink()
        wait_for("the pod gone", lambda: not stub.ListPods(agent_pb2.ListPodsRequest(),
                                                           timeout=5).pods, node)
        assert not rt.containers()
        assert not os.listdir(node.root / "agent" / "pods")
        assert not os.listdir(node.root / "netns")

        # SIGTERM stops the agent cleanly.
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=15) == 0, node.agent_log()
    finally:
        channel.close()


def test_sigterm_stops_the_agent_but_not_its_pods(node: Node, cgroup_parent: str) -> None:
    """Pods outlive a stopped agent; a restart keeps those a manifest still (or again)
    wants, even one that was unreadable at the restart, and removes the others."""
    (node.manifests / "hello.yaml").write_text(MANIFEST)
    node.start()
    channel = grpc.insecure_channel(f"unix:{node.sock}")
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    try:
        pod = wait_for("the pod Running", lambda: running_pod(stub), node)
        container_id = pod.status.container_statuses[0].container_id.removeprefix("podium://")
        rt = Runtime(root=node.root / "runtime", cgroup_parent=cgroup_parent)
        pid = rt.state(container_id).pid
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=15) == 0, node.agent_log()
        assert rt.state(container_id).pid == pid
        os.kill(pid, 0)
        # A manifest broken while the agent is down: its pod is left running, not
        # removed, and adopted once the manifest reads again.
        (node.manifests / "hello.yaml").write_text("apiVersion: v1\nkind: Pod\nspec: [\n")
        node.start()
        wait_for("health SERVING", lambda: serving(channel), node)
        assert not stub.ListPods(agent_pb2.ListPodsRequest(), timeout=5).pods
        assert "leaving pods" in node.agent_log()
        os.kill(pid, 0)
        (node.manifests / "hello.yaml").write_text(MANIFEST)
        again = wait_for("the adopted pod Running", lambda: running_pod(stub), node)
        assert again.status.container_statuses[0].container_id == f"podium://{container_id}"
        assert rt.state(container_id).pid == pid
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=15) == 0, node.agent_log()
        # While the agent is down the manifest goes: the next agent removes the leftover.
        (node.manifests / "hello.yaml").unlink()
        node.start()
        wait_for("health SERVING", lambda: serving(channel), node)
        assert not stub.ListPods(agent_pb2.ListPodsRequest(), timeout=5).pods
        assert not rt.containers()
        assert not os.listdir(node.root / "agent" / "pods")
        assert not os.listdir(node.root / "netns")
        node.proc.send_signal(signal.SIGINT)
        assert node.proc.wait(timeout=15) == 0, node.agent_log()
    finally:
        channel.close()
