"""The agent's gRPC server over a unix socket with a fake agent: ListPods, Logs (tail,
previous, timestamps, limit, follow), Stats, Exec's refusal, health and reflection;
and the CRI log reader on its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agent import logs
from agent.server import make_server, set_health
from proto.podium.v1 import agent_pb2, agent_pb2_grpc, pod_pb2
from runtime.cgroups.base import CgroupStats

LOG = (b"2024-05-01T12:00:00.000000001Z stdout F one\n"
       b"2024-05-01T12:00:01.5Z stderr P tw\n"
       b"2024-05-01T12:00:01.6Z stderr F o\n"
       b"2024-05-01T12:00:02Z stdout F three\n")


def test_entries_join_partial_lines_and_select_tails() -> None:
    found = list(logs.entries(LOG.split(b"\n")[:-1]))
    assert [e.text for e in found] == [b"one", b"two", b"three"]
    assert [e.text for e in logs.select(found, tail=2)] == [b"two", b"three"]
    since = datetime(2024, 5, 1, 12, 0, 1, 550000, tzinfo=UTC)
    assert [e.text for e in logs.select(found, since=since)] == [b"two", b"three"]
    assert logs.render(found[0], True) == b"2024-05-01T12:00:00.000000001Z one\n"
    assert logs.select(found, tail=0) == []


def test_read_stops_at_the_last_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    path.write_bytes(LOG + b"2024-05-01T12:00:03Z stdout F torn")
    found, end = logs.read(path)
    assert len(found) == 3 and end == len(LOG)
    assert logs.read(tmp_path / "none.log") == ([], 0)


class FakeLoop:
    def __init__(self, pods: list[pod_pb2.Pod]) -> None:
        self._pods = pods

    def pods(self) -> list[pod_pb2.Pod]:
        return list(self._pods)


@dataclass
class FakeCgroup:
    def exists(self) -> bool:
        return True

    def stats(self) -> CgroupStats:
        return CgroupStats(cpu_usage_ns=7, memory_current=2048)


@dataclass
class FakeRuntime:
    asked: list[str] = field(default_factory=list)

    def stats(self, container_id: str) -> CgroupStats:
        self.asked.append(container_id)
        return CgroupStats(cpu_usage_ns=123, memory_current=4096, memory_limit=8192,
                           pids_current=2)

    @property
    def driver(self) -> Any:
        class Driver:
            def cgroup(self, path: str) -> FakeCgroup:
                return FakeCgroup()
        return Driver()


@dataclass
class FakeAgent:
    loop: Any
    rt: Any
    pods_dir: Path
    node_name: str = "node-1"
    cgroup_parent: str = "podium"

    @property
    def state_root(self) -> Path:
        return self.pods_dir


def pod(phase: str = "Running", state: str = "running") -> pod_pb2.Pod:
    cs: dict[str, Any] = {"name": "app", "containerID": "podium://u1.app.2",
                          "state": {state: {}},
                          "lastState": {"terminated": {"containerID": "podium://u1.app.1"}}}
    doc = {"metadata": {"name": "web", "namespace": "default", "uid": "u1"},
           "spec": {"containers": [{"name": "app", "image": "busybox"}]},
           "status": {"phase": phase, "containerStatuses": [cs]}}
    return json_format.ParseDict(doc, pod_pb2.Pod())


@dataclass
class Served:
    agent: FakeAgent
    stub: agent_pb2_grpc.AgentServiceStub
    channel: grpc.Channel
    health: Any


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    agent = FakeAgent(FakeLoop([pod()]), FakeRuntime(), tmp_path / "pods")
    logs_dir = agent.pods_dir / "u1" / "logs" / "app"
    logs_dir.mkdir(parents=True)
    (logs_dir / "1.log").write_bytes(b"2024-05-01T11:00:00Z stdout F before\n")
    (logs_dir / "2.log").write_bytes(LOG)
    server, _, health = make_server(agent, f"unix:{tmp_path / 'agent.sock'}")
    server.start()
    channel = grpc.insecure_channel(f"unix:{tmp_path / 'agent.sock'}")
    try:
        yield Served(agent, agent_pb2_grpc.AgentServiceStub(channel), channel, health)
    finally:
        channel.close()
        server.stop(None).wait()


def read_logs(served: Served, **request: Any) -> bytes:
    request.setdefault("pod", "web")
    return b"".join(a.data for a in served.stub.Logs(agent_pb2.LogsRequest(**request),
                                                     timeout=5))


def test_list_pods_filters_by_namespace(served: Served) -> None:
    answer = served.stub.ListPods(agent_pb2.ListPodsRequest(), timeout=5)
    assert [p.metadata.name for p in answer.pods] == ["web"]
    assert answer.pods[0].status.phase == "Running"
    other = served.stub.ListPods(agent_pb2.ListPodsRequest(namespace="kube-system"), timeout=5)
    assert list(other.pods) == []


def test_logs_current_previous_tail_timestamps_limit(served: Served) -> None:
    assert read_logs(served) == b"one\ntwo\nthree\n"
    assert read_logs(served, previous=True) == b"before\n"
    assert read_logs(served, tail_lines=1, timestamps=True) == b"2024-05-01T12:00:02Z three\n"
    assert read_logs(served, limit_bytes=6) == b"one\ntw"
    assert read_logs(served, container="app", namespace="default") == b"one\ntwo\nthree\n"


def test_logs_errors_name_what_is_missing(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        read_logs(served, pod="nope")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "default/nope" in str(missing.value.details())
    with pytest.raises(grpc.RpcError) as no_container:
        read_logs(served, container="db")
    assert no_container.value.code() == grpc.StatusCode.NOT_FOUND


def test_logs_follow_streams_until_the_container_stops(served: Served) -> None:
    path = served.agent.pods_dir / "u1" / "logs" / "app" / "2.log"
    stream: Any = served.stub.Logs(agent_pb2.LogsRequest(pod="web", follow=True), timeout=10)
    got = [next(stream).data for _ in range(3)]
    assert got == [b"one\n", b"two\n", b"three\n"]

    def later() -> None:
        time.sleep(0.3)
        with open(path, "ab") as f:
            f.write(b"2024-05-01T12:00:05Z stdout F four\n")
        time.sleep(0.3)
        served.agent.loop._pods = [pod(state="terminated")]

    threading.Thread(target=later).start()
    assert [a.data for a in stream] == [b"four\n"]


def test_stats_report_containers_pods_and_node(served: Served) -> None:
    answer = served.stub.Stats(agent_pb2.StatsRequest(), timeout=5)
    assert answer.node.node_name == "node-1" and answer.node.memory.limit_bytes > 0
    assert answer.node.fs.capacity_bytes > 0
    [figures] = answer.pods
    assert figures.uid == "u1" and figures.memory.usage_bytes == 2048
    [container] = figures.containers
    assert container.cpu.usage_core_nanoseconds == 123
    assert container.memory.limit_bytes == 8192 and container.pids.current == 2
    assert served.agent.rt.asked == ["u1.app.2"]
    none = served.stub.Stats(agent_pb2.StatsRequest(pod="other"), timeout=5)
    assert list(none.pods) == []


def test_exec_is_refused_plainly(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        list(served.stub.Exec(iter([agent_pb2.ExecRequest()]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Exec" in str(refused.value.details())


def test_health_and_reflection(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    set_health(served.health, True)
    answer = health.Check(health_pb2.HealthCheckRequest(service="podium.v1.AgentService"),
                          timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    set_health(served.health, False)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    [reply] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for s in reply.list_services_response.service}
    assert "podium.v1.AgentService" in names and "grpc.health.v1.Health" in names
