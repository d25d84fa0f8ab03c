"""Pods on one node: from a Pod object to running containers, and keeping them running.

    PodWorker, WorkerDeps     one ordered worker per pod: sync (sandbox, volumes,
                              containers, restarts, status) and terminate
    container_config          one container of a Pod → the runtime's ContainerConfig
    validate_pod, plan_volumes
    RestartBackOff, should_restart
                              restartPolicy and Kubernetes' back-off, on an injected clock
    parse_quantity, parse_bytes, parse_milli_cpu
                              "500m", "128Mi", "1e3"
    Sandbox, ContainerStarter, ImageSource, VolumeHost
                              the worker's seams; the real ones are
                              agent.network.PodNetwork and, in agent.pods.host,
                              RuntimeContainers, StoreImages, HostVolumes

Errors are ``agent.pods.errors.PodError`` and ``PodSpecError`` (with ``.field``).
"""

from __future__ import annotations

from agent.pods.backoff import RestartBackOff, should_restart
from agent.pods.errors import PodError, PodSpecError
from agent.pods.host import HostVolumes, RuntimeContainers, StoreImages
from agent.pods.interfaces import (
    ContainerStarter,
    ExitInfo,
    ImageSource,
    Sandbox,
    SandboxInfo,
    VolumeHost,
)
from agent.pods.spec import (
    ImageFacts,
    SandboxFacts,
    VolumeSource,
    container_config,
    plan_volumes,
    validate_pod,
)
from agent.pods.worker import PodWorker, WorkerDeps
from proto.quantity import QuantityError, parse_bytes, parse_milli_cpu, parse_quantity

__all__ = [
    "ContainerStarter",
    "ExitInfo",
    "HostVolumes",
    "ImageFacts",
    "ImageSource",
    "PodError",
    "PodSpecError",
    "PodWorker",
    "QuantityError",
    "RestartBackOff",
    "RuntimeContainers",
    "Sandbox",
    "SandboxFacts",
    "SandboxInfo",
    "StoreImages",
    "VolumeHost",
    "VolumeSource",
    "WorkerDeps",
    "container_config",
    "parse_bytes",
    "parse_milli_cpu",
    "parse_quantity",
    "plan_volumes",
    "should_restart",
    "validate_pod",
]
