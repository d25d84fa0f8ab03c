"""Pods on the real kernel: two busybox containers sharing an emptyDir and localhost,
restarts with back-off, an OOM kill, and a terminate that leaves nothing.

Everything network-side lives in a test "node" network namespace (``ptnode``) with
``pt`` names, as in test_agent_network.py; the host's own network is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from agent.network import NetworkConfig, PodNetwork, create_netns, remove_netns, run_in_netns
from agent.pods import (
    HostVolumes,
    PodWorker,
    RestartBackOff,
    RuntimeContainers,
    StoreImages,
    WorkerDeps,
)
from proto.podium.v1 import pod_pb2
from runtime.api import Runtime
from runtime.forkserver import ForkServer
from runtime.images import ImageStore, import_rootfs
from tests.conftest import need, need_root

pytestmark = pytest.mark.root

POD_CIDR = IPv4Network("10.88.9.0/24")
IMAGE = "podium-test/busybox:pods"


@dataclass
class Node:
    tmp: Path
    netns: Path
    net: PodNetwork
    rt: Runtime
    deps: WorkerDeps


@pytest.fixture
def node(tmp_dir: Path, busybox_rootfs: Path, cgroup_parent: str) -> Iterator[Node]:
    need_root()
    need(shutil.which("nft") is not None, "needs nft (apt-get install nftables)")
    netns = tmp_dir / "ptnode"
    create_netns(netns)
    config = NetworkConfig(
        pod_cidr=POD_CIDR, bridge="ptbr0", nft_table="ptnat", veth_prefix="pt",
        state_dir=tmp_dir / "state", netns_dir=tmp_dir / "netns", pods_dir=tmp_dir / "pods",
        node_netns=netns, resolv_conf=tmp_dir / "resolv.conf")
    (tmp_dir / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    net = PodNetwork(config)
    store = ImageStore(tmp_dir / "images")
    tarball = tmp_dir / "busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    import_rootfs(store, tarball, IMAGE)
    rt = Runtime(root=tmp_dir / "runtime", cgroup_parent=cgroup_parent)
    server = ForkServer.start()
    deps = WorkerDeps(sandbox=net, containers=RuntimeContainers(rt, server.spawn_shim),
                      images=StoreImages(store), volumes=HostVolumes(),
                      pods_dir=config.pods_dir, cgroup_parent=cgroup_parent)
    try:
        net.setup_node()
        yield Node(tmp_dir, netns, net, rt, deps)
    finally:
        server.close()
        for state in rt.containers():
            rt.delete(state.id, force=True)
        for uid in os.listdir(config.netns_dir) if config.netns_dir.is_dir() else []:
            net.teardown(uid)
        _remove_pod_leftovers(config.pods_dir, cgroup_parent)
        net.teardown_node()
        remove_netns(netns)


def _remove_pod_leftovers(pods_dir: Path, cgroup_parent: str) -> None:
    """What a test that failed before terminate left: volume mounts and pod cgroups."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in reversed(points):
        if point.startswith(str(pods_dir)):
            subprocess.run(["umount", "-l", point], check=False)
    for root in _cgroup_roots():
        for pod in (root / cgroup_parent).glob("pod*"):
            for d in [*(c for c in pod.iterdir() if c.is_dir()), pod]:
                try:
                    d.rmdir()
                except OSError:
                    pass  # still busy: the leak check will name it


def make_pod(uid: str, *containers: dict[str, Any], **spec: Any) -> pod_pb2.Pod:
    doc = {"metadata": {"name": f"pod-{uid}", "namespace": "default", "uid": uid},
           "spec": {"containers": list(containers), **spec}}
    return json_format.ParseDict(doc, pod_pb2.Pod())


def sync_until(worker: PodWorker, done: Any, timeout: float = 20.0,
               ) -> pod_pb2.PodStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = worker.sync()
        if done(status):
            return status
        assert time.monotonic() < deadline, f"timed out; last status: {status}"
        time.sleep(0.05)


def log_lines(node: Node, uid: str, name: str, run: int = 1) -> list[str]:
    path = node.deps.pods_dir / uid / "logs" / name / f"{run}.log"
    if not path.exists():
        return []
    return [line.split(" ", 3)[3] for line in path.read_text().splitlines()]


def test_two_containers_share_an_empty_dir_and_localhost(node: Node) -> None:
    pod = make_pod(
        "pods-a",
        {"name": "server", "image": IMAGE, "command": ["sh", "-c",
         "echo from-server > /shared/file; echo pong | nc -l -p 8080; sleep 600"],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
        {"name": "client", "image": IMAGE, "command": ["sh", "-c",
         'until out=$(nc 127.0.0.1 8080 </dev/null) && [ -n "$out" ]; do sleep 0.1; done; '
         'echo "got $out"; cat /shared/file; hostname; '
         # The test writes /mem/size from the node once the pod runs: wait for it.
         'until [ -f /mem/size ]; do sleep 0.1; done; cat /mem/size; sleep 600'],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared", "readOnly": True},
                          {"name": "mem", "mountPath": "/mem"}],
         "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}},
        volumes=[{"name": "shared", "emptyDir": {}},
                 {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
    )
    worker = PodWorker(pod, node.deps)
    try:
        _check_shared_pod(node, worker)
    except BaseException:
        worker.terminate(grace=0)  # a failed check must not leave the pod to the next test
        raise
    status = worker.terminate(grace=1)
    cgroup = f"{node.deps.cgroup_parent}/podpods-a/client"
    assert all(cs.state.WhichOneof("state") == "terminated" for cs in status.container_statuses)
    assert not (node.deps.pods_dir / "pods-a").exists()
    assert not node.rt.containers()
    assert node.net.lookup("pods-a") is None
    assert not any(Path(h, cgroup).parent.exists() for h in _cgroup_roots())
    assert node.net.ipam.lookup("pods-a") is None
    links = run_in_netns(node.netns, lambda: os.listdir("/sys/class/net"))
    assert not [name for name in links if name.startswith("pt") and name != "ptbr0"]


def _check_shared_pod(node: Node, worker: PodWorker) -> None:
    status = sync_until(worker, lambda s: s.phase == "Running")
    assert IPv4Address(status.pod_ip) in POD_CIDR
    assert [cs.state.WhichOneof("state") for cs in status.container_statuses] == \
        ["running", "running"]
    mem = node.deps.pods_dir / "pods-a" / "volumes" / "mem"
    assert os.path.ismount(mem)
    (mem / "size").write_text("tmpfs-ok\n")
    deadline = time.monotonic() + 15
    while "tmpfs-ok" not in log_lines(node, "pods-a", "client"):
        assert time.monotonic() < deadline, log_lines(node, "pods-a", "client")
        time.sleep(0.1)
    assert log_lines(node, "pods-a", "client") == ["got pong", "from-server", "pod-pods-a",
                                                   "tmpfs-ok"]
    # The pod's containers sit under one pod cgroup, with the limits asked for.
    cgroup = f"{node.deps.cgroup_parent}/podpods-a/client"
    state = node.rt.state("pods-a.client.1")
    assert state.cgroup_path == cgroup
    stats = node.rt.stats("pods-a.client.1")
    assert stats.memory_limit == 64 * 2**20


def _cgroup_roots() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [root, *[p for p in root.iterdir() if p.is_dir()]]


def test_crash_restarts_at_once_then_backs_off(node: Node) -> None:
    pod = make_pod("pods-b", {"name": "crash", "image": IMAGE,
                              "command": ["sh", "-c", "echo run; exit 3"]})
    worker = PodWorker(pod, node.deps,
                       back_off=RestartBackOff(time.monotonic, initial=1.0, maximum=2.0))
    first = time.monotonic()
    status = sync_until(worker, lambda s: s.container_statuses[0].restart_count >= 1)
    assert time.monotonic() - first < 5  # the first restart does not wait
    status = sync_until(
        worker, lambda s: s.container_statuses[0].state.waiting.reason == "CrashLoopBackOff")
    cs = status.container_statuses[0]
    assert cs.last_state.terminated.exit_code == 3
    assert cs.last_state.terminated.reason == "Error"
    count = cs.restart_count
    backed_off = time.monotonic()
    status = sync_until(worker, lambda s: s.container_statuses[0].restart_count > count)
    assert time.monotonic() - backed_off > 0.5  # it waited for the back-off
    status = sync_until(worker, lambda s: s.container_statuses[0].restart_count >= 4)
    assert status.phase == "Running"
    assert log_lines(node, "pods-b", "crash", 1) == ["run"]
    worker.terminate(grace=1)
    assert not node.rt.containers()


def test_memory_hog_is_oom_killed(node: Node) -> None:
    pod = make_pod("pods-c", {
        "name": "hog", "image": IMAGE,
        "command": ["sh", "-c", "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; "
                                "while true; do x=$x$x; done"],
        "resources": {"limits": {"memory": "32Mi"}}}, restartPolicy="Never")
    worker = PodWorker(pod, node.deps)
    status = sync_until(worker, lambda s: s.phase in ("Failed", "Succeeded"), timeout=60)
    terminated = status.container_statuses[0].state.terminated
    assert terminated.reason == "OOMKilled"
    assert terminated.exit_code == 137
    assert status.phase == "Failed"
    worker.terminate(grace=1)


def test_bad_command_waits_with_create_container_error(node: Node) -> None:
    pod = make_pod("pods-d", {"name": "bad", "image": IMAGE, "command": ["/nope"]})
    worker = PodWorker(pod, node.deps)
    status = worker.sync()
    waiting = status.container_statuses[0].state.waiting
    assert waiting.reason == "CreateContainerError" and "/nope" in waiting.message
    assert status.phase == "Pending"
    worker.terminate(grace=1)
    assert not node.rt.containers()


def test_liveness_failure_restarts_and_readiness_toggles_ready(node: Node) -> None:
    from runtime.spec.model import Process

    pod = make_pod("pods-e", {
        "name": "web", "image": IMAGE,
        "command": ["sh", "-c", "touch /tmp/alive; mkdir -p /www; echo ok > /www/index.html; "
                                "exec httpd -f -p 8080 -h /www"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]},
                          "periodSeconds": 1, "failureThreshold": 1,
                          "terminationGracePeriodSeconds": 1},
        "readinessProbe": {"httpGet": {"port": {"strValue": "http"}, "path": "/ready"},
                           "periodSeconds": 1, "failureThreshold": 1}},
        terminationGracePeriodSeconds=1)
    worker = PodWorker(pod, node.deps)

    def sync_in_node() -> pod_pb2.PodStatus:
        # The probes reach the pod's IP from the node, as the agent does.
        return run_in_netns(node.netns, worker.sync)

    def ready(s: pod_pb2.PodStatus) -> bool:
        return {c.type: c.status for c in s.conditions}["Ready"] == "True"

    def exec_in(run: int, *args: str) -> int:
        return node.deps.containers.exec_in_container(  # type: ignore[attr-defined,no-any-return]
            f"pods-e.web.{run}", Process(args=args), 5.0)

    status = until(sync_in_node, lambda s: s.phase == "Running")
    time.sleep(2.5)  # several probe periods: no /ready yet, so never ready
    status = sync_in_node()
    assert not ready(status) and not status.container_statuses[0].ready
    assert exec_in(1, "touch", "/www/ready") == 0
    status = until(sync_in_node, ready, timeout=10)
    assert status.container_statuses[0].ready
    assert exec_in(1, "rm", "/www/ready") == 0
    until(sync_in_node, lambda s: not ready(s), timeout=10)

    assert exec_in(1, "rm", "/tmp/alive") == 0
    status = until(sync_in_node, lambda s: s.container_statuses[0].restart_count == 1
                   and s.container_statuses[0].state.WhichOneof("state") == "running",
                   timeout=20)
    last = status.container_statuses[0].last_state.terminated
    assert last.reason == "Error"
    assert last.message.startswith("Liveness probe failed 1 times in a row: command "
                                   "['test', '-f', '/tmp/alive'] exited with 1")
    # The new run makes /tmp/alive again and keeps running; readiness starts over.
    assert exec_in(2, "touch", "/www/ready") == 0
    status = until(sync_in_node, ready, timeout=10)
    time.sleep(2.5)
    status = sync_in_node()
    assert status.container_statuses[0].restart_count == 1
    worker.terminate(grace=1)
    assert not node.rt.containers()


def until(step: Any, done: Any, timeout: float = 20.0) -> pod_pb2.PodStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = step()
        if done(status):
            return status  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"timed out; last status: {status}"
        time.sleep(0.1)


def test_host_port_is_published_with_the_pod_and_gone_after(node: Node) -> None:
    import socket

    pod = make_pod("pods-f", {
        "name": "web", "image": IMAGE,
        "command": ["sh", "-c", "mkdir -p /www; echo hello-hostport > /www/index.html; "
                                "exec httpd -f -p 8080 -h /www"],
        "ports": [{"containerPort": 8080, "hostPort": 18080}]},
        terminationGracePeriodSeconds=1)
    worker = PodWorker(pod, node.deps)
    status = sync_until(worker, lambda s: s.phase == "Running")
    published = [(str(m.pod_ip), m.container_port, m.host_port, m.protocol)
                 for m in node.net.nat.published()]
    assert published == [(status.pod_ip, 8080, 18080, "tcp")]

    def get() -> bytes:
        # To the node's own address (the bridge's), as a client on the node would.
        with socket.create_connection((str(node.net.gateway.ip), 18080), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return b"".join(iter(lambda: s.recv(4096), b""))

    deadline = time.monotonic() + 10
    while True:
        try:
            answer = run_in_netns(node.netns, get)
            break
        except OSError:
            assert time.monotonic() < deadline, "hostPort 18080 never answered"
            time.sleep(0.1)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello-hostport\n")
    worker.terminate(grace=1)
    assert node.net.nat.published() == []


def test_containers_share_the_pods_ipc_and_uts_namespaces(node: Node) -> None:
    # /dev/mqueue is the IPC namespace's own: a queue made by one container shows in
    # the other's only if they share it.
    pod = make_pod(
        "pods-ipc",
        {"name": "maker", "image": IMAGE, "command": ["sh", "-c",
         "touch /dev/mqueue/podq; hostname; readlink /proc/self/ns/ipc; "
         "readlink /proc/self/ns/uts; sleep 600"]},
        {"name": "finder", "image": IMAGE, "command": ["sh", "-c",
         "until [ -e /dev/mqueue/podq ]; do sleep 0.1; done; echo queue-seen; hostname; "
         "readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts; sleep 600"]})
    worker = PodWorker(pod, node.deps)
    ns_dir = node.deps.pods_dir / "pods-ipc" / "ns"
    try:
        sync_until(worker, lambda s: s.phase == "Running")
        deadline = time.monotonic() + 15
        while len(log_lines(node, "pods-ipc", "finder")) < 4:
            assert time.monotonic() < deadline, log_lines(node, "pods-ipc", "finder")
            time.sleep(0.1)
        maker = log_lines(node, "pods-ipc", "maker")
        finder = log_lines(node, "pods-ipc", "finder")
        assert finder[0] == "queue-seen"
        assert maker == finder[1:] and maker[0] == "pod-pods-ipc"
        assert maker[1] == f"ipc:[{os.stat(ns_dir / 'ipc').st_ino}]"
        assert maker[2] == f"uts:[{os.stat(ns_dir / 'uts').st_ino}]"
        assert maker[1] != os.readlink("/proc/self/ns/ipc")
    finally:
        worker.terminate(grace=0)
    assert not ns_dir.exists() and not (node.deps.pods_dir / "pods-ipc").exists()
    with open("/proc/self/mountinfo") as f:
        assert str(ns_dir) not in f.read()


def test_host_network_pod_keeps_the_nodes_hostname(node: Node) -> None:
    pod = make_pod("pods-hn", {"name": "main", "image": IMAGE, "command": ["sh", "-c",
                   "hostname; sleep 600"]}, hostNetwork=True)
    worker = PodWorker(pod, node.deps)
    try:
        sync_until(worker, lambda s: s.phase == "Running")
        deadline = time.monotonic() + 15
        while not log_lines(node, "pods-hn", "main"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert log_lines(node, "pods-hn", "main") == [os.uname().nodename]
        assert (node.deps.pods_dir / "pods-hn" / "ns" / "ipc").exists()
        assert not (node.deps.pods_dir / "pods-hn" / "ns" / "uts").exists()
    finally:
        worker.terminate(grace=0)
    assert not (node.deps.pods_dir / "pods-hn").exists()


def test_images_are_pulled_from_a_registry(node: Node, busybox_rootfs: Path) -> None:
    from runtime.images import push
    from tests.support.registry import REGISTRY_BIN, Registry

    need(os.path.exists(REGISTRY_BIN), "needs Debian's docker-registry package")
    registry = Registry(node.tmp / "registry").start()
    try:
        scratch = ImageStore(node.tmp / "scratch-images")
        tarball = node.tmp / "busybox.tar"
        remote = f"{registry.host}/test/busybox:1"
        import_rootfs(scratch, tarball, remote)
        push(scratch, remote)
        _check_pulls(node, remote, f"{registry.host}/test/nope:1")
    finally:
        registry.stop()


def _check_pulls(node: Node, remote: str, missing: str) -> None:
    store = node.deps.images.store  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="not found"):
        store.resolve(remote)
    good = PodWorker(make_pod("pods-pull", {"name": "main", "image": remote,
                                            "command": ["sh", "-c", "echo pulled; sleep 600"]}),
                     node.deps)
    bad = PodWorker(make_pod("pods-nope", {"name": "main", "image": missing}), node.deps)
    try:
        status = sync_until(good, lambda s: s.phase == "Running", timeout=60)
        assert status.container_statuses[0].image_id == store.resolve(remote)
        reasons = []
        deadline = time.monotonic() + 60
        while "ImagePullBackOff" not in reasons:
            assert time.monotonic() < deadline, reasons
            cs = bad.sync().container_statuses[0]
            if not reasons or reasons[-1] != cs.state.waiting.reason:
                reasons.append(cs.state.waiting.reason)
                if cs.state.waiting.reason == "ErrImagePull":
                    assert "nope" in cs.state.waiting.message
            time.sleep(0.05)
        assert reasons == ["ContainerCreating", "ErrImagePull", "ImagePullBackOff"]
        status = good.sync()
        assert status.phase == "Running" and status.container_statuses[0].restart_count == 0
        deadline = time.monotonic() + 15
        while log_lines(node, "pods-pull", "main") != ["pulled"]:
            assert time.monotonic() < deadline, log_lines(node, "pods-pull", "main")
            time.sleep(0.1)
    finally:
        bad.terminate(grace=0)
        good.terminate(grace=0)
