"""A pod worker's records → ``PodStatus``, as the kubelet reports it; and the one-word
status ``kubectl get pods`` shows for a pod (``Init:0/2``, ``CrashLoopBackOff``, …).

Containers without a run wait with ``ContainerCreating``, or ``PodInitializing`` in a
pod with init containers (app containers keep it until every init container has
completed). A completed init container is terminated (Completed) and ready. The
conditions: Initialized (every init container completed), ContainersReady and Ready
(every app container ready), PodScheduled.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import datetime
from typing import NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from agent.pods.runs import ContainerRun, ContainerSlot
from proto.podium.v1 import pod_pb2

CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"


class PodFacts(NamedTuple):
    """What the status needs of the worker besides its containers."""

    pod_ip: str
    host_ip: str
    start_time: datetime
    sandbox_ready: bool
    invalid: bool  # the spec cannot be run: phase Failed
    terminated: bool
    message: str = ""
    reason: str = ""


def pod_phase(facts: PodFacts, init: Sequence[ContainerSlot],
              app: Sequence[ContainerSlot]) -> str:
    if facts.invalid:
        return "Failed"
    if any(c.done and not c.completed for c in init):
        return "Failed"  # an init container failed for good (restartPolicy Never)
    if not all(c.completed for c in init):
        return "Pending"
    if app and all(c.done for c in app):
        ok = all(c.run is not None and c.run.exit is not None and c.run.exit.exit_code == 0
                 for c in app)
        return "Succeeded" if ok else "Failed"
    if any(c.run is None for c in app) or not facts.sandbox_ready:
        return "Pending"
    return "Running"


def status_key(facts: PodFacts, init: Sequence[ContainerSlot],
               app: Sequence[ContainerSlot], pod: pod_pb2.Pod) -> Hashable:
    """Everything ``pod_status`` reads, as one value to compare: equal keys give equal
    statuses. A worker syncs each running pod every loop period; comparing this is a
    fraction of building the ``PodStatus`` (protobuf messages, timestamps) again.

    The pod is held, not copied: the worker is handed a new Pod object for every
    change, never one changed in place, and the same object compares by identity
    before any field is read."""
    return (facts, pod, tuple(_slot_key(c) for c in init),
            tuple(_slot_key(c) for c in app))


def _slot_key(c: ContainerSlot) -> Hashable:
    return (c.name, c.index, c.init, c.done, c.restarts, c.waiting_reason,
            c.waiting_message, c.image_id, _run_key(c.run), _run_key(c.last))


def _run_key(run: ContainerRun | None) -> Hashable:
    if run is None:
        return None
    probes = run.probes
    return (run.container_id, run.started_at, run.exit, run.finished_at,
            run.probe_failure,
            None if probes is None else (probes.started, probes.ready))


def pod_status(facts: PodFacts, init: Sequence[ContainerSlot],
               app: Sequence[ContainerSlot], pod: pod_pb2.Pod) -> pod_pb2.PodStatus:
    status = pod_pb2.PodStatus(phase=pod_phase(facts, init, app), pod_ip=facts.pod_ip,
                               host_ip=facts.host_ip)
    if facts.pod_ip:
        status.pod_ips.add(ip=facts.pod_ip)
    if facts.message:
        status.message, status.reason = facts.message, facts.reason
    status.start_time.CopyFrom(timestamp(facts.start_time))
    default = POD_INITIALIZING if init else CONTAINER_CREATING
    for c in init:
        status.init_container_statuses.append(
            container_status(c, pod.spec.init_containers[c.index], default, facts.terminated))
    for c in app:
        status.container_statuses.append(
            container_status(c, pod.spec.containers[c.index], default, facts.terminated))
    status.conditions.add(type="PodScheduled", status="True")
    incomplete = [c.name for c in init if not c.completed]
    _condition(status, "Initialized", incomplete, "ContainersNotInitialized",
               "containers with incomplete status")
    unready = [cs.name for cs in status.container_statuses if not cs.ready]
    if not app:
        unready = ["(none)"]
    for kind in ("ContainersReady", "Ready"):
        _condition(status, kind, unready, "ContainersNotReady",
                   "containers with unready status")
    return status


def _condition(status: pod_pb2.PodStatus, kind: str, failing: list[str], reason: str,
               words: str) -> None:
    if not failing:
        status.conditions.add(type=kind, status="True")
    else:
        status.conditions.add(type=kind, status="False", reason=reason,
                              message=f"{words}: [{' '.join(failing)}]")


def container_status(c: ContainerSlot, spec: pod_pb2.Container, default_reason: str,
                     pod_terminated: bool) -> pod_pb2.ContainerStatus:
    cs = pod_pb2.ContainerStatus(name=c.name, image=spec.image, image_id=c.image_id,
                                 restart_count=c.restarts)
    run = c.run
    if run is not None:
        cs.container_id = f"podium://{run.container_id}"
    running = run is not None and run.exit is None
    probes = run.probes if run is not None else None
    cs.started = running and (probes is None or probes.started)
    previous = c.last
    if run is None:
        cs.state.waiting.reason = c.waiting_reason or default_reason
        cs.state.waiting.message = c.waiting_message
    elif run.exit is None:
        cs.state.running.started_at.CopyFrom(timestamp(run.started_at))
        # Kubernetes: no readiness probe means ready once running (and started); an
        # init container is ready once it has completed, not while it runs.
        cs.ready = (not c.init and (probes is None or probes.ready)
                    and not run.probe_failure)
    elif c.done or pod_terminated:
        cs.state.terminated.CopyFrom(terminated_state(run))
        cs.ready = c.init and c.completed
    else:  # exited, to be started again (back-off, or the start failed)
        cs.state.waiting.reason = c.waiting_reason or default_reason
        cs.state.waiting.message = c.waiting_message
        previous = run
    if previous is not None and previous.exit is not None:
        cs.last_state.terminated.CopyFrom(terminated_state(previous))
    return cs


def terminated_state(run: ContainerRun) -> pod_pb2.ContainerStateTerminated:
    info = run.exit
    assert info is not None
    if info.oom_killed:
        reason = "OOMKilled"
    elif run.probe_failure:
        reason = "Error"  # killed for it, however the process took the SIGTERM
    elif info.exit_code == 0:
        reason = "Completed"
    else:
        reason = "Error"
    state = pod_pb2.ContainerStateTerminated(
        exit_code=info.exit_code, signal=info.signal or 0, reason=reason,
        container_id=f"podium://{run.container_id}", message=run.probe_failure)
    state.started_at.CopyFrom(parse_time(info.started_at) or timestamp(run.started_at))
    if run.finished_at is not None:
        state.finished_at.CopyFrom(parse_time(info.finished_at) or timestamp(run.finished_at))
    return state


def display_status(pod: pod_pb2.Pod) -> str:
    """The STATUS column of ``kubectl get pods``: the phase, or what holds the pod up.

    During initialisation: ``Init:<completed>/<all>``, or ``Init:<reason>`` of the
    init container that is failing or waiting for a reason of its own. After it, the
    last container (in spec order) waiting or terminated with a reason wins.
    """
    status = pod.status
    shown = status.reason or status.phase
    initializing = False
    for i, cs in enumerate(status.init_container_statuses):
        state = cs.state.WhichOneof("state")
        if state == "terminated" and cs.state.terminated.exit_code == 0:
            continue
        initializing = True
        if state == "terminated":
            t = cs.state.terminated
            shown = "Init:" + (t.reason or (f"Signal:{t.signal}" if t.signal
                                            else f"ExitCode:{t.exit_code}"))
        elif state == "waiting" and cs.state.waiting.reason not in ("", POD_INITIALIZING):
            shown = "Init:" + cs.state.waiting.reason
        else:
            shown = f"Init:{i}/{len(pod.spec.init_containers)}"
        break
    if initializing:
        return shown
    running = False
    for cs in reversed(status.container_statuses):
        state = cs.state.WhichOneof("state")
        if state == "waiting" and cs.state.waiting.reason:
            shown = cs.state.waiting.reason
        elif state == "terminated":
            t = cs.state.terminated
            shown = t.reason or (f"Signal:{t.signal}" if t.signal else f"ExitCode:{t.exit_code}")
        elif state == "running" and cs.ready:
            running = True
    if shown == "Completed" and running:
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions)
        shown = "Running" if ready else "NotReady"
    if pod.metadata.HasField("deletion_timestamp"):
        shown = "Terminating"
    return shown


def timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def parse_time(text: str) -> Timestamp | None:
    if not text:
        return None
    ts = Timestamp()
    try:
        ts.FromJsonString(text)
    except ValueError:
        return None
    return ts
