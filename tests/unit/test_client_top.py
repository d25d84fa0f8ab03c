"""``podium top``: rates from two samples, the tables, and a node that does not answer.

The end-to-end tests run a real in-process scheduler with hollow nodes, and a fake
agent (an AgentService on loopback) whose figures advance by a fixed step per
call, so every rate is known exactly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from client.api import Client, ServerError, Unreachable
from client.cli import main
from client.cli.top import (
    Sample,
    Usage,
    allocatable,
    container_usage,
    cpu_cell,
    memory_cell,
    nano_cores,
    needs_second_sample,
    percent_cell,
    pod_total,
    sample,
)
from proto.podium.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, pod_pb2
from tests.support.cluster import HollowNode, node_message, running_scheduler
from tests.support.cluster import client as raw_client

MI = 1024 * 1024
SECOND = 1_000_000_000


def stamp(ts: Any, ns: int) -> None:
    ts.seconds, ts.nanos = divmod(ns, SECOND)


# --- rates and cells -------------------------------------------------------------------


def test_a_rate_is_the_counter_difference_over_the_time_between() -> None:
    before = agent_pb2.CpuStats(usage_core_nanoseconds=10 * SECOND)
    after = agent_pb2.CpuStats(usage_core_nanoseconds=10 * SECOND + SECOND // 2)
    assert nano_cores(before, 0, after, 2 * SECOND) == SECOND // 4  # a quarter of a core
    assert cpu_cell(nano_cores(before, 0, after, 2 * SECOND)) == "250m"


def test_a_reported_rate_is_used_as_it_is() -> None:
    after = agent_pb2.CpuStats(usage_core_nanoseconds=5, usage_nano_cores=123_000_000)
    assert nano_cores(None, 0, after, 0) == 123_000_000
    response = agent_pb2.StatsResponse()
    response.node.cpu.usage_nano_cores = 1
    assert not needs_second_sample(response)
    response.pods.add().containers.add().cpu.usage_core_nanoseconds = 7
    assert needs_second_sample(response)


@pytest.mark.parametrize("before_ns, after_ns, used", [
    (0, 0, 5),               # no time between the samples
    (0, SECOND, -5),         # the counter went back: a new container
])
def test_no_rate_when_it_cannot_be_told(before_ns: int, after_ns: int, used: int) -> None:
    before = agent_pb2.CpuStats(usage_core_nanoseconds=100)
    after = agent_pb2.CpuStats(usage_core_nanoseconds=100 + used)
    assert nano_cores(before, before_ns, after, after_ns) is None
    assert nano_cores(None, 0, after, after_ns) is None


def test_cells() -> None:
    assert cpu_cell(None) == "<unknown>"
    assert cpu_cell(1_499_999) == "1m"
    assert memory_cell(50 * MI + 1) == "50Mi"
    assert percent_cell(0.5, 2.0) == "25%"
    assert percent_cell(None, 2.0) == percent_cell(1.0, None) == "<unknown>"


def stats(node_ns: int, pods: dict[str, list[tuple[str, str, int, int]]]) -> Sample:
    """A sample: pods as name → [(container, id, cpu ns used so far, working set)]."""
    r = agent_pb2.StatsResponse()
    stamp(r.node.time, node_ns)
    for name, containers in pods.items():
        p = r.pods.add(namespace="default", name=name, uid=f"uid-{name}")
        for container, cid, cpu, memory in containers:
            cs = p.containers.add(name=container, container_id=cid)
            stamp(cs.time, node_ns)
            cs.cpu.usage_core_nanoseconds = cpu
            cs.memory.working_set_bytes = memory
    return Sample(r, received_ns=0)


def test_containers_are_matched_by_id_so_a_restart_has_no_rate() -> None:
    before = stats(0, {"web": [("httpd", "c1", SECOND, 10 * MI), ("sidecar", "s1", 0, MI)]})
    after = stats(2 * SECOND, {"web": [("httpd", "c1", 2 * SECOND, 12 * MI),
                                       ("sidecar", "s2", 5, MI)]})  # restarted: new ID
    usage = container_usage(before, after)
    assert usage[("default", "web")] == [("httpd", Usage(SECOND // 2, 12 * MI)),
                                         ("sidecar", Usage(None, MI))]
    # The pod: what is known of its CPU, all of its memory.
    assert pod_total(usage[("default", "web")]) == Usage(SECOND // 2, 13 * MI)
    assert pod_total([("a", Usage(None, MI))]) == Usage(None, MI)
    assert pod_total([]) == Usage(0, 0)


def test_allocatable_from_the_node_object_else_from_the_agent() -> None:
    node = node_message("n1", cpu="3800m", memory="6Gi")
    figures = agent_pb2.NodeStats()
    figures.cpu.limit_cores = 4
    figures.memory.limit_bytes = 8 * 1024 * MI
    assert allocatable(node, figures) == (3.8, 6 * 1024 * MI)
    assert allocatable(None, figures) == (4.0, 8 * 1024 * MI)
    figures.status.allocatable["cpu"] = "2"
    assert allocatable(None, figures)[0] == 2.0


def test_sampling_asks_again_only_where_needed_and_keeps_failures_apart() -> None:
    asked: list[str] = []
    rated = agent_pb2.StatsResponse()
    rated.node.cpu.usage_nano_cores = 5

    def ask(node: str) -> Any:
        asked.append(node)
        if node == "down":
            raise ServerError(grpc.StatusCode.UNAVAILABLE, "cannot reach the agent of node down")
        return rated if node == "rated" else agent_pb2.StatsResponse()

    samples, failed = sample(["counter", "rated", "down"], 0.01, ask)
    assert sorted(asked) == ["counter", "counter", "down", "rated"]
    assert samples["rated"][0] is None and samples["counter"][0] is not None
    assert list(failed) == ["down"]

    def unreachable(node: str) -> Any:
        raise Unreachable("cannot reach the scheduler at 127.0.0.1:1")

    with pytest.raises(Unreachable):  # not one node's trouble: the whole command's
        sample(["a", "b"], 0.01, unreachable)


# --- against a scheduler and a fake agent ----------------------------------------------


class FakeAgent(agent_pb2_grpc.AgentServiceServicer):
    """Per call: one more second on the clock; the node uses half a core, each
    container a quarter; memory fixed (2Gi the node, 50Mi a container)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.calls = 0
        self.pods: list[pod_pb2.Pod] = []
        self.requests: list[agent_pb2.StatsRequest] = []
        self.lock = threading.Lock()

    def Stats(self, request: agent_pb2.StatsRequest, context: Any) -> agent_pb2.StatsResponse:
        with self.lock:
            self.calls += 1
            self.requests.append(request)
            n = self.calls
        now = 1_700_000_000 * SECOND + n * SECOND
        r = agent_pb2.StatsResponse()
        r.node.node_name = self.node
        stamp(r.node.time, now)
        r.node.cpu.usage_core_nanoseconds = n * SECOND // 2
        r.node.memory.working_set_bytes = 2048 * MI
        for pod in self.pods:
            meta = pod.metadata
            if request.pod and meta.name != request.pod:
                continue
            p = r.pods.add(namespace=meta.namespace, name=meta.name, uid=meta.uid)
            for c in pod.spec.containers:
                cs = p.containers.add(name=c.name, container_id=f"podium://{meta.uid}-{c.name}")
                stamp(cs.time, now)
                cs.cpu.usage_core_nanoseconds = n * SECOND // 4
                cs.memory.working_set_bytes = 50 * MI
        return r


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Cluster:
    def __init__(self, server: str, agent: FakeAgent) -> None:
        self.server, self.agent = server, agent

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--server", self.server, "--interval", "0.01"])
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    agent = FakeAgent("node-1")  # type: ignore[abstract]  # only Stats is called
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        with running_scheduler() as scheduler, raw_client(scheduler.port) as stub:
            nodes: list[HollowNode] = []
            try:
                for name, agent_port in (("node-1", port), ("node-2", closed_port())):
                    nodes.append(HollowNode(stub, name, cpu="2", memory="8Gi"))
                    # Registered again, now with where its agent listens.
                    node = node_message(name, cpu="2", memory="8Gi")
                    node.status.daemon_endpoints.agent_endpoint.port = agent_port
                    node.status.daemon_endpoints.agent_endpoint.address = "127.0.0.1"
                    stub.RegisterNode(cluster_pb2.RegisterNodeRequest(node=node))
                server = f"127.0.0.1:{scheduler.port}"
                with Client(server) as c:
                    place_pods(c)
                    agent.pods = [p for p in c.list("Pod") if p.spec.node_name == "node-1"]
                yield Cluster(server, agent)
            finally:
                for hollow in nodes:
                    hollow.close()
    finally:
        grpc_server.stop(0)


def place_pods(c: Client) -> None:
    """web (two containers) and db on node-1, whose agent answers; lost on node-2."""
    for name, node_name, containers in (("web", "node-1", ["httpd", "log"]),
                                        ("db", "node-1", ["pg"]),
                                        ("lost", "node-2", ["main"])):
        pod = pod_pb2.Pod()
        pod.metadata.name = name
        pod.metadata.labels["app"] = name
        pod.spec.node_selector["kubernetes.io/hostname"] = node_name
        for container in containers:
            pod.spec.containers.add(name=container, image="busybox:latest")
        c.create(pod)
    wait_for(lambda: len([p for p in c.list("Pod") if p.status.phase == "Running"]) == 3,
             "3 running pods")


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


UNREACHABLE = ("podium: top: no figures from node node-2: cannot reach the agent of node "
               "node-2: connection refused\n")


def test_top_pods_prints_the_rows_it_has_and_names_the_node_it_lacks(
        cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cluster.run(capsys, "top", "pods")
    assert out.splitlines() == ["NAME   CPU(cores)   MEMORY(bytes)",
                                "db     250m         50Mi",
                                "web    500m         100Mi"]
    assert (code, err) == (1, UNREACHABLE)
    assert cluster.agent.calls == 2  # two samples, one call each
    assert all(r.node_name == "node-1" and r.namespace == "default"
               for r in cluster.agent.requests)


def test_top_pods_by_container_and_in_every_namespace(
        cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cluster.run(capsys, "top", "po", "-l", "app=web", "--containers")
    assert (code, out.splitlines()) == (0, ["POD   NAME    CPU(cores)   MEMORY(bytes)",
                                            "web   httpd   250m         50Mi",
                                            "web   log     250m         50Mi"])
    code, out, _ = cluster.run(capsys, "top", "pods", "-A", "--sort-by", "cpu")
    assert out.splitlines()[:3] == ["NAMESPACE   NAME   CPU(cores)   MEMORY(bytes)",
                                    "default     web    500m         100Mi",
                                    "default     db     250m         50Mi"]
    code, out, err = cluster.run(capsys, "top", "pod", "db")
    assert (code, out.splitlines()[1:], err) == (0, ["db     250m         50Mi"], "")
    assert cluster.agent.requests[-1].pod == "db"


def test_top_nodes_shares_of_allocatable(cluster: Cluster,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cluster.run(capsys, "top", "nodes")
    assert out.splitlines() == [
        "NAME     CPU(cores)   CPU%        MEMORY(bytes)   MEMORY%",
        "node-1   500m         25%         2048Mi          25%",
        "node-2   <unknown>    <unknown>   <unknown>       <unknown>"]
    assert (code, err) == (1, UNREACHABLE)
    code, out, err = cluster.run(capsys, "top", "node", "node-1")
    assert (code, len(out.splitlines()), err) == (0, 2, "")


def test_top_errors(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.run(capsys, "top", "nodes", "nope") == (
        1, "", 'Error from server (NotFound): nodes "nope" not found\n')
    assert cluster.run(capsys, "top", "pods", "-n", "empty") == (
        0, "", "No resources found in empty namespace.\n")
    assert main(["top", "pods", "--interval", "0", "--server", cluster.server]) == 2
    assert "--interval must be more than 0" in capsys.readouterr().err
    assert main(["top"]) == 2
    assert "pods|nodes" in capsys.readouterr().err
    assert main(["top", "pods", "--server", f"127.0.0.1:{closed_port()}"]) == 1
    assert capsys.readouterr().err.startswith("podium: cannot reach the scheduler at")
