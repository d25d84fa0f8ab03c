"""Logs and Exec relayed by a real in-process scheduler to a small fake agent:
a failure to reach the agent names the pod's node, not the scheduler; a missing
container is the agent's NOT_FOUND, passed on with its words; a missing pod is
the scheduler's."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from client.api import Client, NotFound, ServerError, Unreachable
from proto.podium.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, pod_pb2
from tests.support.cluster import client as raw_client
from tests.support.cluster import node_message, running_scheduler

NODE = "via-node"


class FakeAgent(agent_pb2_grpc.AgentServiceServicer):
    """One pod with one container "app"; any other container name is NOT_FOUND."""

    def Logs(self, request: agent_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[agent_pb2.LogsResponse]:
        if request.container not in ("", "app"):
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"pod {request.namespace}/{request.pod}: no container "
                          f"{request.container!r}")
        yield agent_pb2.LogsResponse(data=f"hello from {request.pod}\n".encode())
        if request.HasField("tail_lines"):
            yield agent_pb2.LogsResponse(data=f"tail {request.tail_lines}\n".encode())

    def Exec(self, requests: Iterator[agent_pb2.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[agent_pb2.ExecResponse]:
        start = next(requests).start
        if start.container not in ("", "app"):
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"pod {start.namespace}/{start.pod}: no container "
                          f"{start.container!r}")
        yield agent_pb2.ExecResponse(stdout=" ".join(start.command).encode())
        yield agent_pb2.ExecResponse(exit=agent_pb2.ExecExit(exit_code=7))

    def ListPods(self, request: agent_pb2.ListPodsRequest,
                 context: grpc.ServicerContext) -> agent_pb2.ListPodsResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used here")

    def Stats(self, request: agent_pb2.StatsRequest,
              context: grpc.ServicerContext) -> agent_pb2.StatsResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used here")


class Setup:
    def __init__(self, api: Client, agent: grpc.Server) -> None:
        self.api, self.agent = api, agent


@pytest.fixture
def setup() -> Iterator[Setup]:
    agent = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(FakeAgent(), agent)
    port = agent.add_insecure_port("127.0.0.1:0")
    agent.start()
    try:
        with running_scheduler() as scheduler, raw_client(scheduler.port) as stub:
            node = node_message(NODE)
            node.status.daemon_endpoints.agent_endpoint.port = port
            stub.RegisterNode(cluster_pb2.RegisterNodeRequest(node=node))
            pod = pod_pb2.Pod()
            pod.metadata.name = "web"
            pod.spec.node_name = NODE  # bound already: placement is not what is tested
            pod.spec.containers.add(name="app", image="busybox:latest")
            stub.Create(cluster_pb2.CreateRequest(object=cluster_pb2.Object(pod=pod)))
            with Client(f"127.0.0.1:{scheduler.port}", timeout=5) as api:
                yield Setup(api, agent)
    finally:
        agent.stop(grace=None)


def test_logs_and_exec_reach_the_agent_through_the_scheduler(setup: Setup) -> None:
    assert b"".join(setup.api.logs("web")) == b"hello from web\n"
    assert b"".join(setup.api.logs("web", tail=0)) == b"hello from web\ntail 0\n"
    assert b"".join(setup.api.logs("web", tail=-1)) == b"hello from web\n"  # kubectl's "all"
    result = setup.api.exec("web", ["echo", "hi"])
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"echo hi", b"")


def test_a_missing_container_is_named_and_a_missing_pod_too(setup: Setup) -> None:
    with pytest.raises(NotFound) as err:
        list(setup.api.logs("web", container="nope"))
    assert str(err.value) == "Error from server (NotFound): pod default/web: no container 'nope'"
    with pytest.raises(NotFound) as err:
        setup.api.exec("web", ["true"], container="nope")
    assert str(err.value) == "Error from server (NotFound): pod default/web: no container 'nope'"

    with pytest.raises(NotFound) as err:
        list(setup.api.logs("ghost"))
    assert str(err.value) == 'Error from server (NotFound): pods "ghost" not found'
    with pytest.raises(NotFound) as err:
        setup.api.exec("ghost", ["true"])
    assert str(err.value) == 'Error from server (NotFound): pods "ghost" not found'


def test_an_agent_that_is_down_is_named_by_its_node(setup: Setup) -> None:
    setup.agent.stop(grace=None).wait()
    expected = (f"Error from server (ServiceUnavailable): cannot reach the agent of node "
                f"{NODE}: connection refused")
    for follow in (False, True):
        with pytest.raises(ServerError) as err:
            list(setup.api.logs("web", follow=follow))
        assert not isinstance(err.value, Unreachable)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert str(err.value) == expected
    with pytest.raises(ServerError) as err:
        setup.api.exec("web", ["true"])
    assert str(err.value) == expected


def test_a_scheduler_that_is_down_is_still_the_scheduler() -> None:
    with Client("127.0.0.1:1", timeout=2) as api:
        with pytest.raises(Unreachable, match="cannot reach the scheduler at 127.0.0.1:1"):
            list(api.logs("web"))
        with pytest.raises(Unreachable, match="cannot reach the scheduler at 127.0.0.1:1"):
            api.exec("web", ["true"])
