"""The agent's gRPC face: ``AgentService`` plus gRPC health checking and reflection.

    ListPods   the loop's latest snapshot: each Pod with its status
    Logs       a container's CRI log, current or previous run: tail, since, follow,
               timestamps, limit_bytes (the CRI prefix is stripped, as kubectl shows)
    Stats      per container cpu / memory / pids from its cgroup, pod cgroup totals,
               node totals from psutil
    Exec       a command in a running container, stdio streamed both ways, with a
               terminal on request (``agent.execs``); UNIMPLEMENTED for an agent
               without an exec service

Health (``grpc.health.v1``) reports SERVING for "" and ``podium.v1.AgentService``
while the pod loop steps; reflection lets grpcurl list the services.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc
import psutil
from google.protobuf.timestamp_pb2 import Timestamp

from agent import logs
from agent.pods.spec import pod_cgroup
from proto.podium.v1 import agent_pb2, agent_pb2_grpc, node_pb2, pod_pb2

if TYPE_CHECKING:
    from agent.execs import ExecService
    from agent.podloop import PodLoop
    from runtime.api import Runtime
    from runtime.cgroups.base import CgroupStats

log = logging.getLogger("podium.agent")

SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


class AgentLike(Protocol):
    """What the servicer reads of the agent (``agent.daemon.Agent`` is one)."""

    loop: PodLoop
    rt: Runtime

    @property
    def pods_dir(self) -> Path: ...
    @property
    def node_name(self) -> str: ...
    @property
    def state_root(self) -> Path: ...
    @property
    def cgroup_parent(self) -> str: ...


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, agent: AgentLike) -> None:
        self.agent = agent

    # --- ListPods -----------------------------------------------------------------

    def ListPods(self, request: agent_pb2.ListPodsRequest,
                 context: grpc.ServicerContext) -> agent_pb2.ListPodsResponse:
        if request.label_selector:
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          "ListPods: label_selector is not supported by the agent yet")
        pods = [p for p in self.agent.loop.pods()
                if not request.namespace or p.metadata.namespace == request.namespace]
        pods.sort(key=lambda p: (p.metadata.namespace, p.metadata.name))
        return agent_pb2.ListPodsResponse(pods=pods)

    # --- Logs ---------------------------------------------------------------------

    def Logs(self, request: agent_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[agent_pb2.LogsResponse]:
        pod = self._pod(request.namespace, request.pod, context)
        name = request.container or _only_container(pod, context)
        status = _container_status(pod, name)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"pod {_key(pod)}: no container {name!r}")
        container_id = (status.last_state.terminated.container_id if request.previous
                        else status.container_id)
        run = _run_number(container_id)
        if run is None:
            which = "previous " if request.previous else ""
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"pod {_key(pod)}: container {name} has no {which}run to show")
        path = self.agent.pods_dir / pod.metadata.uid / "logs" / name / f"{run}.log"
        since = (datetime.now(UTC) - timedelta(seconds=request.since_seconds)
                 if request.HasField("since_seconds") else None)
        tail = request.tail_lines if request.HasField("tail_lines") else None
        budget = request.limit_bytes if request.HasField("limit_bytes") else None
        found, end = logs.read(path)
        stream = iter(logs.select(found, tail, since))
        if request.follow and not request.previous:
            uid = pod.metadata.uid

            def running() -> bool:
                now = self._by_uid(uid)
                cs = _container_status(now, name) if now is not None else None
                return (cs is not None and cs.container_id == container_id
                        and cs.state.WhichOneof("state") == "running")

            stream = _chain(stream, logs.follow(path, running, context.is_active, end))
        for entry in stream:
            data = logs.render(entry, request.timestamps)
            if budget is not None:
                data = data[:budget]
                budget -= len(data)
            if data:
                yield agent_pb2.LogsResponse(data=data)
            if budget is not None and budget <= 0:
                return

    # --- Stats --------------------------------------------------------------------

    def Stats(self, request: agent_pb2.StatsRequest,
              context: grpc.ServicerContext) -> agent_pb2.StatsResponse:
        response = agent_pb2.StatsResponse(node=self._node_stats())
        for pod in self.agent.loop.pods():
            meta = pod.metadata
            if request.namespace and meta.namespace != request.namespace:
                continue
            if request.pod and meta.name != request.pod:
                continue
            response.pods.append(self._pod_stats(pod))
        return response

    def _pod_stats(self, pod: pod_pb2.Pod) -> agent_pb2.PodStats:
        meta = pod.metadata
        out = agent_pb2.PodStats(namespace=meta.namespace, name=meta.name, uid=meta.uid)
        rt = self.agent.rt
        for cs in pod.status.container_statuses:
            if cs.state.WhichOneof("state") != "running":
                continue
            container_id = cs.container_id.removeprefix("podium://")
            try:
                figures = rt.stats(container_id)
            except Exception as e:  # noqa: BLE001 - it may have ended a moment ago
                log.debug("stats of %s: %s", container_id, e)
                continue
            out.containers.append(agent_pb2.ContainerStats(
                name=cs.name, container_id=cs.container_id, time=_now(),
                cpu=_cpu(figures), memory=_memory(figures),
                pids=agent_pb2.PidsStats(current=figures.pids_current,
                                         limit=figures.pids_limit or 0)))
        try:
            cgroup = rt.driver.cgroup(pod_cgroup(self.agent.cgroup_parent, meta.uid))
            if cgroup.exists():
                totals = cgroup.stats()
                out.cpu.CopyFrom(_cpu(totals))
                out.memory.CopyFrom(_memory(totals))
        except Exception as e:  # noqa: BLE001 - the pod's figures are still worth sending
            log.debug("stats of pod %s: %s", meta.uid, e)
        return out

    def _node_stats(self) -> agent_pb2.NodeStats:
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        memory = psutil.virtual_memory()
        node = agent_pb2.NodeStats(
            node_name=self.agent.node_name, time=_now(),
            cpu=agent_pb2.CpuStats(usage_core_nanoseconds=int(busy * 1e9),
                                   limit_cores=float(psutil.cpu_count() or 0)),
            memory=agent_pb2.MemoryStats(
                usage_bytes=memory.total - memory.free,
                working_set_bytes=memory.total - memory.available,
                available_bytes=memory.available, limit_bytes=memory.total),
            process_count=len(psutil.pids()))
        root = self.agent.state_root
        while not root.exists() and root != root.parent:
            root = root.parent
        disk = psutil.disk_usage(str(root))
        node.fs.CopyFrom(agent_pb2.FsStats(capacity_bytes=disk.total,
                                           available_bytes=disk.free, used_bytes=disk.used))
        status: Callable[[], node_pb2.NodeStatus] | None = getattr(self.agent, "node_status",
                                                                   None)
        if status is not None:
            node.status.CopyFrom(status())
        return node

    # --- Exec ---------------------------------------------------------------------

    def Exec(self, request_iterator: Iterator[agent_pb2.ExecRequest],
             context: grpc.ServicerContext) -> Iterator[agent_pb2.ExecResponse]:
        execs: ExecService | None = getattr(self.agent, "execs", None)
        if execs is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          "Exec: not available in this podium-agent (no exec service)")
        yield from execs.serve(request_iterator, context, self.agent.loop.pods())

    # --- helpers ------------------------------------------------------------------

    def _pod(self, namespace: str, name: str, context: grpc.ServicerContext) -> pod_pb2.Pod:
        namespace = namespace or "default"
        for pod in self.agent.loop.pods():
            if pod.metadata.namespace == namespace and pod.metadata.name == name:
                return pod
        context.abort(grpc.StatusCode.NOT_FOUND, f"pod {namespace}/{name}: not on this node")
        raise AssertionError("abort returned")

    def _by_uid(self, uid: str) -> pod_pb2.Pod | None:
        for pod in self.agent.loop.pods():
            if pod.metadata.uid == uid:
                return pod
        return None


def make_server(agent: AgentLike, listen: str, workers: int = 8
                ) -> tuple[grpc.Server, int, HealthLike]:
    """The server with every service added, not yet started; the port bound (0 for a
    unix socket) and the health servicer to report through."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers,
                                                    thread_name_prefix="podium-grpc"))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(agent), server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as e:
        raise OSError(f"listen address {listen}: cannot bind ({e})") from None
    if port == 0 and not listen.startswith("unix:"):
        raise OSError(f"listen address {listen}: cannot bind")
    return server, port, checker


class HealthLike(Protocol):
    def set(self, service: str, status: int) -> None: ...


def set_health(checker: HealthLike, serving: bool) -> None:
    from grpc_health.v1 import health_pb2

    status = (health_pb2.HealthCheckResponse.SERVING if serving
              else health_pb2.HealthCheckResponse.NOT_SERVING)
    for service in ("", SERVICE):
        checker.set(service, status)


def _chain(*streams: Iterator[logs.Entry]) -> Iterator[logs.Entry]:
    for stream in streams:
        yield from stream


def _only_container(pod: pod_pb2.Pod, context: grpc.ServicerContext) -> str:
    names = [c.name for c in pod.spec.containers]
    if len(names) != 1:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"pod {_key(pod)}: name a container, one of {', '.join(names)}")
    return names[0]


def _container_status(pod: pod_pb2.Pod, name: str) -> pod_pb2.ContainerStatus | None:
    for cs in pod.status.container_statuses:
        if cs.name == name:
            return cs
    if any(c.name == name for c in pod.spec.containers):
        return pod_pb2.ContainerStatus(name=name)
    return None


def _run_number(container_id: str) -> int | None:
    run = container_id.rpartition(".")[2]
    return int(run) if container_id and run.isdigit() else None


def _key(pod: pod_pb2.Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


def _cpu(figures: CgroupStats) -> agent_pb2.CpuStats:
    return agent_pb2.CpuStats(usage_core_nanoseconds=figures.cpu_usage_ns)


def _memory(figures: CgroupStats) -> agent_pb2.MemoryStats:
    return agent_pb2.MemoryStats(usage_bytes=figures.memory_current,
                                 working_set_bytes=figures.memory_current,
                                 limit_bytes=figures.memory_limit or 0,
                                 oom_kills=figures.oom_kills)

