"""podium-agent with ``--scheduler`` on the real kernel, against a fake ClusterService:
the node registers without a pod CIDR and builds its network on the one assigned,
runs the pod WatchPods lists and reports it Running, keeps it running (same PID)
while the scheduler restarts, resumes the watch, and stops the pod when it is deleted,
reporting it stopped.

The agent runs in the test's node network namespace (see test_agent_daemon), so the
fake scheduler listens on a unix socket both sides reach.
"""

from __future__ import annotations

import signal
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from proto.podium.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc, pod_pb2
from runtime.api import Runtime
from tests.integration.test_agent_daemon import IMAGE, Node, node, wait_for
from tests.unit.test_agent_link import FakeCluster, event

__all__ = ["node"]  # the fixture, used by name below

pytestmark = pytest.mark.root
W = cluster_pb2.WatchEvent


def hello_pod() -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "hello", "default", "u-hello"
    pod.spec.node_name = "ptnode"
    pod.spec.termination_grace_period_seconds = 2
    pod.spec.containers.add(name="main", image=IMAGE,
                            command=["sh", "-c", "while true; do sleep 1; done"])
    return pod


class Scheduler:
    def __init__(self, fake: FakeCluster, path: Path) -> None:
        self.fake, self.path = fake, path
        self.server: grpc.Server | None = None

    def start(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(self.fake, self.server)
        assert self.server.add_insecure_port(f"unix:{self.path}")
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.fake.pushed.put(None)
            self.server.stop(grace=None).wait()
            self.server = None
            while not self.fake.pushed.empty():
                self.fake.pushed.get()


def test_scheduler_pods_run_survive_a_scheduler_restart_and_stop_on_delete(
        node: Node, cgroup_parent: str) -> None:
    fake = FakeCluster()
    fake.interval = 0.2
    fake.scripts.append([event(W.ADDED, hello_pod(), 3), event(W.BOOKMARK, revision=3)])
    scheduler = Scheduler(fake, node.tmp / "sched.sock")
    scheduler.start()
    i = node.argv.index("--pod-cidr")
    del node.argv[i:i + 2]  # the scheduler assigns it
    node.argv += ["--scheduler", f"unix:{scheduler.path}"]

    def phases() -> list[str]:
        with fake.lock:
            return [s.status.phase for s in fake.statuses if s.name == "hello"]

    channel = grpc.insecure_channel(f"unix:{node.sock}")
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    rt = Runtime(root=node.root / "runtime", cgroup_parent=cgroup_parent)
    try:
        node.start()
        wait_for("hello reported Running", lambda: "Running" in phases(), node)
        assert fake.registrations[0].node.spec.pod_cidr == ""
        assert fake.registrations[0].node.metadata.name == "ptnode"
        running = next(s for s in fake.statuses if s.status.phase == "Running")
        assert running.uid == "u-hello" and running.node_name == "ptnode"
        assert running.status.pod_ip.startswith("10.88.7.")  # the assigned CIDR
        pods = stub.ListPods(agent_pb2.ListPodsRequest(), timeout=5).pods
        container_id = pods[0].status.container_statuses[0].container_id.removeprefix(
            "podium://")
        pid = rt.state(container_id).pid

        scheduler.stop()
        scheduler.start()
        wait_for("the watch resumed", lambda: len(fake.watches) >= 2 or None, node)
        assert fake.watches[-1].from_revision == 3, node.agent_log()
        assert rt.state(container_id).pid == pid, node.agent_log()

        deleting = hello_pod()
        deleting.metadata.deletion_timestamp.GetCurrentTime()
        deleting.metadata.deletion_grace_period_seconds = 2
        fake.pushed.put(event(W.MODIFIED, deleting, 4))
        wait_for("hello reported stopped",
                 lambda: phases()[-1] in ("Succeeded", "Failed") or None, node)
        assert not rt.containers(), node.agent_log()
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=15) == 0, node.agent_log()
    finally:
        channel.close()
        scheduler.stop()
