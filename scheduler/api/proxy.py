"""Logs, Exec and Stats passed through to the agent of the pod's node.

A client needs only the scheduler's address: the scheduler finds the pod's
node, reads the agent's endpoint from the Node's status, and relays the
stream both ways. Channels to agents are kept and reused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from proto.podium.v1 import agent_pb2, agent_pb2_grpc, node_pb2
from scheduler import objects
from scheduler.api.errors import Precondition, abort, streaming, unary
from scheduler.api.registry import Registry
from scheduler.api.validation import Invalid
from scheduler.objects import Key
from scheduler.store.base import StoreError


def agent_address(node: node_pb2.Node) -> str:
    endpoint = node.status.daemon_endpoints.agent_endpoint
    if endpoint.address.startswith("unix:"):  # an agent on this machine
        return endpoint.address
    if not endpoint.port:
        raise Precondition(f"node {node.metadata.name} reports no agent endpoint")
    host = endpoint.address
    if host in ("", "0.0.0.0", "::"):
        internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
        host = internal[0] if internal else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{endpoint.port}"


class Agents:
    """gRPC stubs for the agents, one channel per address."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def stub(self, address: str) -> agent_pb2_grpc.AgentServiceStub:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = grpc.insecure_channel(address)
        return agent_pb2_grpc.AgentServiceStub(channel)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _relay_error(context: grpc.ServicerContext, error: grpc.RpcError) -> None:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNAVAILABLE
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    context.abort(code, details or "agent unavailable")


def _relay(call: Any, context: grpc.ServicerContext) -> Iterator[Any]:
    """The agent's answers, passed on; the agent's call ends with the client's."""
    context.add_callback(call.cancel)
    try:
        yield from call
    except grpc.RpcError as error:
        if context.is_active():
            _relay_error(context, error)


class ProxyMethods:
    """Mixed into the ClusterService servicer (scheduler/api/service.py)."""

    registry: Registry
    agents: Agents

    def _agent_of_node(self, node_name: str) -> agent_pb2_grpc.AgentServiceStub:
        node = self.registry.get(Key("Node", "", node_name)).node
        return self.agents.stub(agent_address(node))

    def _agent_of_pod(self, namespace: str, pod: str,
                      node_name: str = "") -> agent_pb2_grpc.AgentServiceStub:
        if not pod:
            raise Invalid("pod", "is required")
        if not node_name:
            found = self.registry.get(Key("Pod", objects.scope("Pod", namespace), pod)).pod
            node_name = found.spec.node_name
            if not node_name:
                raise Precondition(f"pod {pod} is not on a node yet (Pending)")
        return self._agent_of_node(node_name)

    @streaming
    def Logs(self, request: agent_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[agent_pb2.LogsResponse]:
        stub = self._agent_of_pod(request.namespace, request.pod, request.node_name)
        yield from _relay(stub.Logs(request), context)

    def Exec(self, requests: Iterator[agent_pb2.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[agent_pb2.ExecResponse]:
        first = next(requests, None)
        if first is None or first.WhichOneof("request") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "the first message must be `start`")
        try:
            stub = self._agent_of_pod(first.start.namespace, first.start.pod)
        except (StoreError, Invalid, Precondition) as error:
            abort(context, error)

        def upstream() -> Iterator[agent_pb2.ExecRequest]:
            yield first
            yield from requests

        yield from _relay(stub.Exec(upstream()), context)

    @unary
    def Stats(self, request: agent_pb2.StatsRequest,
              context: grpc.ServicerContext) -> agent_pb2.StatsResponse:
        if not request.node_name:
            raise Invalid("node_name", "is required when asking the scheduler")
        stub = self._agent_of_node(request.node_name)
        try:
            response: agent_pb2.StatsResponse = stub.Stats(request, timeout=10)
        except grpc.RpcError as error:
            _relay_error(context, error)
            raise
        return response

