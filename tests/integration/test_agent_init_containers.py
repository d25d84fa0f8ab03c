"""Init containers on the real kernel: in order, to completion, before the app; sharing
the pod's volumes and namespaces; retried or failing the pod; not run again after an
agent restart while the app containers run."""

from __future__ import annotations

import os
import time

import pytest

from agent.pods import PodWorker
from agent.pods.status import display_status
from proto.podium.v1 import pod_pb2
from tests.integration.test_agent_pods import IMAGE, Node, log_lines, make_pod, node, sync_until

__all__ = ["node"]

pytestmark = pytest.mark.root

SHARED = [{"name": "work", "mountPath": "/work"}]


def init(name: str, script: str) -> dict[str, object]:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", script],
            "volumeMounts": SHARED}


def shown(worker: PodWorker, status: pod_pb2.PodStatus) -> str:
    pod = pod_pb2.Pod()
    pod.CopyFrom(worker.pod)
    pod.status.CopyFrom(status)
    return display_status(pod)


def wait_log(node: Node, uid: str, name: str, count: int) -> list[str]:
    deadline = time.monotonic() + 15
    while len(lines := log_lines(node, uid, name)) < count:
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)
    return lines


def test_init_containers_run_in_order_then_the_app(node: Node) -> None:
    pod = make_pod(
        "init-a",
        {"name": "app", "image": IMAGE, "volumeMounts": SHARED, "command": ["sh", "-c",
         "cat /work/order; hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/net; "
         "sleep 600"]},
        initContainers=[
            init("first", "sleep 0.5; echo first >> /work/order"),
            init("second", "echo second >> /work/order; hostname > /work/host; "
                 "readlink /proc/self/ns/ipc > /work/ipc; readlink /proc/self/ns/net > /work/net"),
        ],
        volumes=[{"name": "work", "emptyDir": {}}])
    worker = PodWorker(pod, node.deps)
    try:
        seen = []
        status = worker.sync()
        while status.phase != "Running":
            if not seen or seen[-1] != shown(worker, status):
                seen.append(shown(worker, status))
            time.sleep(0.05)
            status = worker.sync()
        assert seen[0] == "Init:0/2" and set(seen) <= {"Init:0/2", "Init:1/2"}
        inits = status.init_container_statuses
        assert [cs.state.terminated.reason for cs in inits] == ["Completed", "Completed"]
        assert all(cs.ready and cs.restart_count == 0 for cs in inits)
        assert {c.type: c.status for c in status.conditions}["Initialized"] == "True"
        lines = wait_log(node, "init-a", "app", 5)
        assert lines[:3] == ["first", "second", "pod-init-a"]
        work = node.deps.pods_dir / "init-a" / "volumes" / "work"
        # The init containers ran in the pod's sandbox: same hostname and namespaces.
        assert (work / "host").read_text().strip() == "pod-init-a"
        assert lines[3] == (work / "ipc").read_text().strip()
        assert lines[4] == (work / "net").read_text().strip()
        assert [s.id for s in node.rt.containers()] == ["init-a.app.1"]  # inits removed
    finally:
        worker.terminate(grace=0)


def test_failed_init_container_is_retried_then_the_app_starts(node: Node) -> None:
    pod = make_pod(
        "init-b", {"name": "app", "image": IMAGE, "command": ["sleep", "600"]},
        initContainers=[init("flaky", "if [ -f /work/tried ]; then exit 0; fi; "
                             "touch /work/tried; exit 1")],
        volumes=[{"name": "work", "emptyDir": {}}])
    worker = PodWorker(pod, node.deps)
    try:
        status = sync_until(worker, lambda s: s.phase == "Running")
        flaky = status.init_container_statuses[0]
        assert flaky.restart_count == 1 and flaky.state.terminated.reason == "Completed"
        assert flaky.last_state.terminated.exit_code == 1
    finally:
        worker.terminate(grace=0)


def test_failed_init_container_fails_the_pod_with_never(node: Node) -> None:
    pod = make_pod("init-c", {"name": "app", "image": IMAGE, "command": ["sleep", "600"]},
                   initContainers=[{"name": "broken", "image": IMAGE,
                                    "command": ["sh", "-c", "exit 7"]}],
                   restartPolicy="Never")
    worker = PodWorker(pod, node.deps)
    try:
        status = sync_until(worker, lambda s: s.phase == "Failed")
        broken = status.init_container_statuses[0]
        assert broken.state.terminated.exit_code == 7
        assert shown(worker, status) == "Init:Error"
        assert status.container_statuses[0].state.waiting.reason == "PodInitializing"
        assert not node.rt.containers()
    finally:
        worker.terminate(grace=0)


def test_after_an_agent_restart_completed_inits_do_not_run_again(node: Node) -> None:
    pod = make_pod("init-d", {"name": "app", "image": IMAGE, "command": ["sleep", "600"]},
                   initContainers=[init("setup", "echo ran >> /work/runs")],
                   volumes=[{"name": "work", "emptyDir": {}}])
    first = PodWorker(pod, node.deps)
    try:
        sync_until(first, lambda s: s.phase == "Running")
        pid = node.rt.state("init-d.app.1").pid
        # A new agent: a new worker takes over what the runtime and the disk hold.
        second = PodWorker(pod, node.deps)
        second.adopt(node.net.lookup("init-d"), [s.id for s in node.rt.containers()])
        for _ in range(5):
            status = second.sync()
        assert status.phase == "Running"
        setup = status.init_container_statuses[0]
        assert setup.state.terminated.reason == "Completed"
        assert node.rt.state("init-d.app.1").pid == pid
        assert [s.id for s in node.rt.containers()] == ["init-d.app.1"]
        work = node.deps.pods_dir / "init-d" / "volumes" / "work"
        assert (work / "runs").read_text() == "ran\n"
        assert os.listdir(node.deps.pods_dir / "init-d" / "logs" / "setup") == ["1.log"]
        second.terminate(grace=0)
    finally:
        first.terminate(grace=0)
