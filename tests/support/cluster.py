"""A scheduler served in-process on loopback, and hollow nodes to place pods on.

A hollow node registers and heartbeats like an agent and reports the pods
bound to it Running, without creating containers: enough to test the API,
placement and the controllers without the kernel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, node_pb2, pod_pb2
from scheduler.server import Scheduler, SchedulerConfig


@contextmanager
def running_scheduler(data: Path | None = None, **overrides: object) -> Iterator[Scheduler]:
    store = f"sqlite://{data / 'cluster.db'}" if data is not None else "memory"
    config = SchedulerConfig(listen="127.0.0.1:0", store=store, **overrides)  # type: ignore[arg-type]
    scheduler = Scheduler(config)
    try:
        scheduler.start()
        yield scheduler
    finally:
        scheduler.close()


@contextmanager
def client(port: int) -> Iterator[cluster_pb2_grpc.ClusterServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield cluster_pb2_grpc.ClusterServiceStub(channel)
    finally:
        channel.close()


def node_message(name: str, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
                 labels: dict[str, str] | None = None) -> node_pb2.Node:
    node = node_pb2.Node()
    node.metadata.name = name
    node.metadata.labels.update(labels or {})
    for field in (node.status.capacity, node.status.allocatable):
        field.update({"cpu": cpu, "memory": memory, "pods": pods})
    node.status.conditions.add(type="Ready", status="True")
    node.status.addresses.add(type="InternalIP", address="127.0.0.1")
    return node


class HollowNode:
    """An agent without containers: registers, heartbeats, runs pods on paper."""

    def __init__(self, stub: cluster_pb2_grpc.ClusterServiceStub, name: str,
                 cpu: str = "4", memory: str = "8Gi", pods: str = "110") -> None:
        self.stub = stub
        self.name = name
        self.node = stub.RegisterNode(
            cluster_pb2.RegisterNodeRequest(node=node_message(name, cpu, memory, pods))).node
        self.stop = threading.Event()
        self.pods: dict[str, pod_pb2.Pod] = {}
        self._threads = [threading.Thread(target=self._beat, daemon=True),
                         threading.Thread(target=self._run_pods, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _beat(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.stub.Heartbeat(cluster_pb2.HeartbeatRequest(node_name=self.name))
            except grpc.RpcError:
                pass

    def _run_pods(self) -> None:
        call = self.stub.WatchPods(cluster_pb2.WatchPodsRequest(node_name=self.name))
        self._call = call
        try:
            for event in call:
                if self.stop.is_set():
                    return
                if event.type in (event.ADDED, event.MODIFIED):
                    self._report(event.object.pod)
                elif event.type == event.DELETED:
                    self.pods.pop(event.object.pod.metadata.uid, None)
        except grpc.RpcError:
            return

    def _report(self, pod: pod_pb2.Pod) -> None:
        status = pod_pb2.PodStatus()
        if pod.metadata.HasField("deletion_timestamp"):
            status.phase = "Succeeded"
            for container in pod.spec.containers:
                cs = status.container_statuses.add(name=container.name)
                cs.state.terminated.exit_code = 0
        else:
            status.phase = "Running"
            status.conditions.add(type="Ready", status="True")
            for container in pod.spec.containers:
                cs = status.container_statuses.add(name=container.name, ready=True)
                cs.state.running.started_at.GetCurrentTime()
        if pod.status.phase == status.phase and not pod.metadata.HasField("deletion_timestamp"):
            return
        self.pods[pod.metadata.uid] = pod
        try:
            self.stub.UpdatePodStatus(cluster_pb2.UpdatePodStatusRequest(
                node_name=self.name, namespace=pod.metadata.namespace,
                name=pod.metadata.name, uid=pod.metadata.uid, status=status))
        except grpc.RpcError:
            pass

    def close(self) -> None:
        """Stops heartbeating and watching: to the scheduler, the node died."""
        self.stop.set()
        call = getattr(self, "_call", None)
        if call is not None:
            call.cancel()
        for thread in self._threads:
            thread.join(timeout=5)
