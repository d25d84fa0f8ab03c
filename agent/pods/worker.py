"""``PodWorker``: one pod, from its Pod object to running containers and back to nothing.

The agent keeps one worker per pod and calls its steps in order, never two at once:

    adopt(...)         once, before the first sync, after an agent restart: take over
                       the sandbox and containers an earlier agent left running
    sync(pod)          make what is missing (sandbox, volumes, containers), notice
                       exits, restart by restartPolicy and back-off; returns the status
    terminate(grace)   SIGTERM, SIGKILL after the grace period, then remove the
                       containers, the pod cgroup, the volumes, the sandbox, the dirs

``sync`` is a step, not a loop: it never sleeps, so a caller (a thread per pod, or one
loop over all pods) decides how often to look. Time comes from the injected clock
(monotonic seconds) and wall clock, so the unit tests drive both by hand.

Probes (``agent.pods.probes``): each container run gets a fresh ``ProbeSet``; ``sync``
runs the probes that are due, there and then, each bounded by its own
``timeoutSeconds`` (so one step takes at most the sum of the due probes' timeouts,
usually one second each; probes are rare next to the loop's period, and a thread per
pod keeps one pod's slow probe from holding up another). A failed liveness or startup
probe sends SIGTERM and, one grace period later (the probe's, else the pod's), SIGKILL
— without waiting in ``sync`` — and the restart policy and back-off take it from
there; the run's last state says ``Error`` with the probe's message. A container is
ready while it runs and its readiness probe (if any) passes; the pod is Ready when all
of its containers are.

hostPorts: published on the node's NAT table (``host_ports``) once the sandbox is
made, before any container starts, and unpublished on terminate.

A pod's files, under ``<pods_dir>/<uid>/``:

    network/                        hosts, hostname, resolv.conf (``agent.network``)
    volumes/<name>/                 emptyDirs (a tmpfs mounted here for medium Memory)
    containers/<name>/<n>/          rootfs (overlay mount point), upper, work of run n
    logs/<name>/<n>.log             the CRI log of run n, kept for ``logs --previous``
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from agent.errors import AgentError
from agent.pods import backoff
from agent.pods.errors import PodError, PodSpecError
from agent.pods.interfaces import (
    ContainerStarter,
    ExitInfo,
    ImageSource,
    Sandbox,
    SandboxInfo,
    VolumeHost,
)
from agent.pods.probe_runners import ProbeRunner
from agent.pods.probes import ProbeSet
from agent.pods.spec import (
    ImageFacts,
    SandboxFacts,
    VolumeSource,
    container_config,
    pod_cgroup,
    validate_pod,
)
from proto.podium.v1 import pod_pb2
from runtime.errors import RuntimeError_
from runtime.spec.model import ContainerConfig, Mount, Process

DEFAULT_GRACE = 30.0
EXIT_WAIT = 10.0  # how long terminate waits for a SIGKILLed container's record


# (container id, process, timeout) → exit code; TimeoutError once it had to be killed.
ContainerExec = Callable[[str, Process, float], int]


class HostPorts(Protocol):
    """The node's hostPort publisher: ``agent.network.NatTable`` is one."""

    def publish(self, pod_ip: str, container_port: int, host_port: int,
                protocol: str) -> object: ...
    def unpublish(self, pod_ip: str, container_port: int, host_port: int,
                  protocol: str) -> object: ...


@dataclass
class WorkerDeps:
    """Everything a worker touches outside itself.

    ``exec_in_container`` (exec probes) and ``host_ports`` default to what the real
    containers (``RuntimeContainers.exec_in_container``) and sandbox
    (``PodNetwork.nat``) offer; without them exec probes are unknown and a pod that
    asks for a hostPort cannot start.
    """

    sandbox: Sandbox
    containers: ContainerStarter
    images: ImageSource
    volumes: VolumeHost
    pods_dir: Path
    cgroup_parent: str
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    host_ip: str = ""
    exec_in_container: ContainerExec | None = None
    host_ports: HostPorts | None = None

    def __post_init__(self) -> None:
        if self.exec_in_container is None:
            self.exec_in_container = getattr(self.containers, "exec_in_container", None)
        if self.host_ports is None:
            self.host_ports = getattr(self.sandbox, "nat", None)


@dataclass
class _Run:
    """One run of a container: what started, and how it ended."""

    container_id: str
    attempt: int
    started: float  # clock
    started_at: datetime
    exit: ExitInfo | None = None
    finished_at: datetime | None = None
    probes: ProbeSet | None = None
    process: Process | None = None  # exec probes run as this (user, env, cwd)
    probe_failure: str = ""  # why a probe had it killed, for lastState's message
    kill_at: float | None = None  # clock: SIGKILL then, if the SIGTERM did not end it


@dataclass
class _Container:
    name: str
    index: int
    run: _Run | None = None  # the current (or last, when done) run
    last: _Run | None = None  # the run before it, for lastState
    attempts: int = 0
    restarts: int = 0
    done: bool = False  # exited and restartPolicy says stay down
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    image_id: str = ""


class PodWorker:
    def __init__(self, pod: pod_pb2.Pod, deps: WorkerDeps,
                 back_off: backoff.RestartBackOff | None = None) -> None:
        self.pod = pod
        self.deps = deps
        self.uid = pod.metadata.uid
        self.back_off = back_off or backoff.RestartBackOff(deps.clock)
        self.containers = [_Container(c.name, i) for i, c in enumerate(pod.spec.containers)]
        self.volumes: dict[str, VolumeSource] = {}
        self.sandbox_ready = False
        self.ports_ready = False
        self.published: list[tuple[str, int, int, str]] = []  # (ip, port, hostPort, proto)
        self.volumes_ready = False
        self.pod_ip = ""
        self.netns: Path | None = None
        self.files: Path | None = None
        self.failure = ""  # a pod-level problem, for status.message
        self.failure_reason = ""
        self.invalid = False
        self.terminated = False
        self.start_time = deps.wall()

    @property
    def pod_dir(self) -> Path:
        return self.deps.pods_dir / self.uid

    # --- sync ---------------------------------------------------------------------

    def sync(self, pod: pod_pb2.Pod | None = None) -> pod_pb2.PodStatus:
        """One step towards the pod's spec; returns the status it leaves."""
        if pod is not None:
            names = [c.name for c in pod.spec.containers]
            if names != [c.name for c in self.containers]:
                raise PodError(f"pod {self.uid}: its containers cannot change "
                               f"({', '.join(names)}): delete and recreate the pod")
            # Other changes apply to containers started from now on.
            self.invalid = self.invalid and pod == self.pod
            self.pod = pod
        if self.terminated or self.invalid:
            return self.status()
        if not self._prepare():
            return self.status()
        for c in self.containers:
            self._sync_container(c)
        return self.status()

    def _prepare(self) -> bool:
        try:
            self.volumes = validate_pod(self.pod, self.pod_dir)
        except PodSpecError as e:
            self.invalid = True
            self.failure, self.failure_reason = str(e), "Invalid"
            return False
        try:
            if not self.sandbox_ready:
                if self.pod.spec.host_network:
                    self.pod_ip = self.deps.host_ip
                else:
                    info = self.deps.sandbox.setup(self.uid, self.pod.metadata.name)
                    self.pod_ip, self.netns, self.files = str(info.ip), info.netns, info.files
                self.sandbox_ready = True
            if not self.ports_ready:
                self._publish_ports()
                self.ports_ready = True
            if not self.volumes_ready:
                for volume in self.volumes.values():
                    self.deps.volumes.prepare(volume)
                self.volumes_ready = True
        except (AgentError, RuntimeError_, OSError) as e:
            # Retried on the next sync; what exists stays until then or terminate.
            self.failure, self.failure_reason = str(e), "SandboxError"
            return False
        self.failure = self.failure_reason = ""
        return True

    def _sync_container(self, c: _Container) -> None:
        if c.done:
            return
        run = c.run
        if run is not None and run.exit is None:
            info = self.deps.containers.exit_info(run.container_id)
            if info is None:
                self._probe(c, run)
                return  # still running
            self._ended(c, run, info)
        if c.run is not None and c.run.exit is not None:
            policy = self.pod.spec.restart_policy or backoff.ALWAYS
            if not backoff.should_restart(policy, c.run.exit.exit_code):
                c.done = True
                return
            if self.back_off.in_backoff(self._key(c)):
                c.waiting_reason = "CrashLoopBackOff"
                c.waiting_message = (f"back-off {self._backoff_words(c)} restarting failed "
                                     f"container={c.name} pod={self.pod.metadata.name}")
                return
        self._start(c)

    def _ended(self, c: _Container, run: _Run, info: ExitInfo) -> None:
        run.exit = info
        run.finished_at = self.deps.wall()
        try:
            self.deps.containers.remove(run.container_id)
        finally:
            self.deps.images.release(run.container_id)
        shutil.rmtree(self._instance_dir(c.name, run.attempt), ignore_errors=True)
        self.back_off.record_exit(self._key(c), run.started)

    def _start(self, c: _Container) -> None:
        spec = self.pod.spec.containers[c.index]
        attempt = c.attempts + 1
        container_id = f"{self.uid}.{c.name}.{attempt}"
        try:
            image = self.deps.images.facts(spec.image)
        except (RuntimeError_, OSError, AgentError) as e:
            c.waiting_reason, c.waiting_message = "ErrImagePull", str(e)
            return
        sandbox = SandboxFacts(pod_dir=self.pod_dir, netns=self.netns, files=self.files,
                               cgroup_parent=self.deps.cgroup_parent, volumes=self.volumes)
        instance = self._instance_dir(c.name, attempt)
        try:
            config = container_config(self.pod, c.index, image, sandbox, instance,
                                      lambda user: self.deps.images.lookup_user(image, user))
        except (AgentError, RuntimeError_) as e:
            c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(e)
            return
        log = self._log_path(c.name, attempt)
        try:
            for sub in ("rootfs", "upper", "work"):
                (instance / sub).mkdir(parents=True, exist_ok=True)
            log.parent.mkdir(parents=True, exist_ok=True)
            self._make_sub_paths(config.mounts)
            c.image_id = self.deps.images.hold(spec.image, container_id)
            self.deps.containers.start(container_id, config, log)
        except (RuntimeError_, AgentError, OSError) as e:
            self.deps.images.release(container_id)
            shutil.rmtree(instance, ignore_errors=True)
            c.waiting_reason, c.waiting_message = "CreateContainerError", str(e)
            c.attempts = attempt  # the failed run counts, so its log path is never reused
            return
        if c.run is not None:
            c.last = c.run
            c.restarts += 1
        c.attempts = attempt
        now = self.deps.clock()
        c.run = _Run(container_id, attempt, now, self.deps.wall(),
                     probes=ProbeSet.for_container(spec, f"spec.containers[{c.index}]", now),
                     process=config.process)
        c.waiting_reason = c.waiting_message = ""

    # --- probes -------------------------------------------------------------------

    def _probe(self, c: _Container, run: _Run) -> None:
        """Run the run's due probes; on a liveness/startup failure, stop the run."""
        now = self.deps.clock()
        if run.kill_at is not None:
            if now >= run.kill_at:
                run.kill_at = None  # one SIGKILL; the next syncs wait for its exit
                self._signal(run, signal.SIGKILL, all_processes=True)
            return
        probes = run.probes
        if probes is None or run.probe_failure or not probes.due(now):
            return
        runner = ProbeRunner(self.pod_ip, self._exec_for(c, run))
        changes = probes.tick(now, runner, self.deps.clock)
        if not changes.restart:
            return
        run.probe_failure = changes.restart_message
        grace = changes.grace_period
        if grace is None:
            grace = self._pod_grace()
        self._signal(run, signal.SIGTERM, all_processes=False)
        run.kill_at = self.deps.clock() + grace

    def _exec_for(self, c: _Container, run: _Run) -> Callable[[tuple[str, ...], float], int] | None:
        run_exec = self.deps.exec_in_container
        if run_exec is None:
            return None
        if run.process is None:  # an adopted run: its process is rebuilt from the spec
            config = self._rebuild_config(c, run)
            if config is None:
                return None
            run.process = config.process
        template = run.process

        def exec_in(args: tuple[str, ...], timeout: float) -> int:
            process = template._replace(args=args, terminal=False)
            return run_exec(run.container_id, process, timeout)

        return exec_in

    def _rebuild_config(self, c: _Container, run: _Run) -> ContainerConfig | None:
        spec = self.pod.spec.containers[c.index]
        try:
            image: ImageFacts = self.deps.images.facts(spec.image)
            sandbox = SandboxFacts(pod_dir=self.pod_dir, netns=self.netns, files=self.files,
                                   cgroup_parent=self.deps.cgroup_parent, volumes=self.volumes)
            return container_config(self.pod, c.index, image, sandbox,
                                    self._instance_dir(c.name, run.attempt),
                                    lambda user: self.deps.images.lookup_user(image, user))
        except (AgentError, RuntimeError_, OSError):
            return None  # exec probes stay unknown for this run

    def _signal(self, run: _Run, sig: int, all_processes: bool) -> None:
        try:
            self.deps.containers.signal(run.container_id, sig, all_processes)
        except (RuntimeError_, OSError):
            pass  # it ended meanwhile: the exit record says how

    def _pod_grace(self) -> float:
        spec = self.pod.spec
        return (float(spec.termination_grace_period_seconds)
                if spec.HasField("termination_grace_period_seconds") else DEFAULT_GRACE)

    # --- hostPorts ------------------------------------------------------------------

    def _publish_ports(self) -> None:
        """Every container's hostPorts, or none: a failure unpublishes this round's."""
        if self.pod.spec.host_network:
            return  # the containers bind the node's ports themselves
        wanted = [(self.pod_ip, port.container_port, port.host_port, port.protocol or "TCP")
                  for container in self.pod.spec.containers for port in container.ports
                  if port.host_port]
        if not wanted:
            return
        table = self.deps.host_ports
        if table is None:
            raise PodError(f"pod {self.uid}: hostPort {wanted[0][2]}: no NAT table on "
                           "this node to publish it")
        try:
            for mapping in wanted:
                if mapping not in self.published:
                    table.publish(*mapping)
                    self.published.append(mapping)
        except BaseException:
            self._unpublish_ports()
            raise

    def _unpublish_ports(self) -> None:
        table = self.deps.host_ports
        while self.published and table is not None:
            table.unpublish(*self.published[-1])
            self.published.pop()

    def _make_sub_paths(self, mounts: tuple[Mount, ...]) -> None:
        """A volumeMount's subPath inside an emptyDir is made on first use (as kubelet)."""
        volume_root = self.pod_dir / "volumes"
        for mount in mounts:
            source = Path(mount.source)
            if source.is_relative_to(volume_root) and not source.exists():
                source.mkdir(parents=True, mode=0o777)

    # --- adopt (after an agent restart) ---------------------------------------------

    def adopt(self, sandbox: SandboxInfo | None, container_ids: Iterable[str],
              started: Mapping[str, datetime] | None = None) -> None:
        """Take over what an earlier agent left of this pod, before the first ``sync``.

        ``container_ids`` are the pod's containers in the runtime (``<uid>.<name>.<n>``):
        each spec container's newest run becomes its current run, still running or
        not (the next ``sync`` reads its exit record); older runs are removed. Run
        numbers go on from the logs kept, so a log is never written twice, and the
        restart count is read from them (one log per run started).
        """
        if self.pod.spec.host_network:
            self.pod_ip, self.sandbox_ready = self.deps.host_ip, True
        elif sandbox is not None:
            self.pod_ip, self.netns, self.files = str(sandbox.ip), sandbox.netns, sandbox.files
            self.sandbox_ready = True
        newest: dict[str, tuple[int, str]] = {}
        stale: list[str] = []
        for container_id in container_ids:
            parsed = _parse_container_id(self.uid, container_id)
            if parsed is None or parsed[0] not in {c.name for c in self.containers}:
                stale.append(container_id)
                continue
            name, attempt = parsed
            if name in newest:
                stale.append(newest[name][1] if newest[name][0] < attempt else container_id)
            if name not in newest or newest[name][0] < attempt:
                newest[name] = (attempt, container_id)
        for container_id in stale:
            self.deps.containers.remove(container_id)
            self.deps.images.release(container_id)
        for c in self.containers:
            logs = self._log_runs(c.name)
            c.attempts = max([*logs, newest.get(c.name, (0, ""))[0]])
            if c.name not in newest:
                continue
            attempt, container_id = newest[c.name]
            when = (started or {}).get(container_id) or self.deps.wall()
            now = self.deps.clock()
            c.run = _Run(container_id, attempt, now, when, probes=ProbeSet.for_container(
                self.pod.spec.containers[c.index], f"spec.containers[{c.index}]", now))
            c.restarts = max(len(logs) - 1, 0)
            spec = self.pod.spec.containers[c.index]
            try:
                c.image_id = self.deps.images.hold(spec.image, container_id)
            except (RuntimeError_, AgentError, OSError):
                pass  # the image went away; the running container does not need it
            c.waiting_reason = ""

    def _log_runs(self, name: str) -> list[int]:
        try:
            entries = (self.pod_dir / "logs" / name).iterdir()
            return [int(p.stem) for p in entries if p.suffix == ".log" and p.stem.isdigit()]
        except OSError:
            return []

    # --- terminate ----------------------------------------------------------------

    def terminate(self, grace: float | None = None) -> pod_pb2.PodStatus:
        """Stop every container and remove everything of the pod; safe to repeat.

        Every removal step runs even when one fails; the first failure is raised after.
        """
        if grace is None:
            grace = self._pod_grace()
        running = [c for c in self.containers if c.run is not None and c.run.exit is None]
        self._signal_all(running, signal.SIGTERM, all_processes=False)
        self._wait_exits(running, grace)
        still = [c for c in running if c.run is not None and c.run.exit is None]
        self._signal_all(still, signal.SIGKILL, all_processes=True)
        self._wait_exits(still, EXIT_WAIT)
        failures: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - the rest must still be removed
                failures.append(e)

        for c in self.containers:
            run = c.run
            if run is not None and run.exit is None:
                run.exit = ExitInfo(exit_code=137, signal=signal.SIGKILL)
                run.finished_at = self.deps.wall()
            if run is not None:
                attempt(partial(self.deps.containers.remove, run.container_id))
                attempt(partial(self.deps.images.release, run.container_id))
            c.done = True
        attempt(partial(self.deps.containers.remove_cgroup,
                        pod_cgroup(self.deps.cgroup_parent, self.uid)))
        for volume in self.volumes.values():
            attempt(partial(self.deps.volumes.cleanup, volume))
        attempt(self._unpublish_ports)
        if not self.pod.spec.host_network:
            attempt(lambda: self.deps.sandbox.teardown(self.uid))
        attempt(lambda: shutil.rmtree(self.pod_dir) if self.pod_dir.exists() else None)
        for c in self.containers:
            self.back_off.forget(self._key(c))
        self.terminated = True
        self.sandbox_ready = self.volumes_ready = self.ports_ready = False
        if failures:
            first = failures[0]
            raise PodError(f"pod {self.uid}: removing it failed: {first}") from first
        return self.status()

    def _signal_all(self, containers: list[_Container], sig: int, all_processes: bool) -> None:
        for c in containers:
            assert c.run is not None
            self._signal(c.run, sig, all_processes)

    def _wait_exits(self, containers: list[_Container], timeout: float) -> None:
        deadline = self.deps.clock() + timeout
        while True:
            for c in containers:
                run = c.run
                if run is not None and run.exit is None:
                    info = self.deps.containers.exit_info(run.container_id)
                    if info is not None:
                        run.exit, run.finished_at = info, self.deps.wall()
            if all(c.run is None or c.run.exit is not None for c in containers):
                return
            if self.deps.clock() >= deadline:
                return
            self.deps.sleep(0.05)

    # --- status -------------------------------------------------------------------

    def status(self) -> pod_pb2.PodStatus:
        status = pod_pb2.PodStatus(phase=self._phase(), pod_ip=self.pod_ip,
                                   host_ip=self.deps.host_ip)
        if self.pod_ip:
            status.pod_ips.add(ip=self.pod_ip)
        if self.failure:
            status.message, status.reason = self.failure, self.failure_reason
        status.start_time.CopyFrom(_timestamp(self.start_time))
        for c in self.containers:
            status.container_statuses.append(self._container_status(c))
        ready = bool(self.containers) and all(cs.ready for cs in status.container_statuses)
        for kind, value in (("PodScheduled", True), ("Initialized", True),
                            ("ContainersReady", ready), ("Ready", ready)):
            status.conditions.add(type=kind, status="True" if value else "False")
        return status

    def _phase(self) -> str:
        if self.invalid:
            return "Failed"
        runs = [c.run for c in self.containers]
        if self.containers and all(c.done for c in self.containers):
            exits = [r.exit for r in runs if r is not None]
            ok = len(exits) == len(runs) and all(e is not None and e.exit_code == 0
                                                 for e in exits)
            return "Succeeded" if ok else "Failed"
        if any(r is None for r in runs) or not self.sandbox_ready:
            return "Pending"
        return "Running"

    def _container_status(self, c: _Container) -> pod_pb2.ContainerStatus:
        spec = self.pod.spec.containers[c.index]
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
            cs.state.waiting.reason = c.waiting_reason or "ContainerCreating"
            cs.state.waiting.message = c.waiting_message
        elif run.exit is None:
            cs.state.running.started_at.CopyFrom(_timestamp(run.started_at))
            # Kubernetes: no readiness probe means ready once running (and started).
            cs.ready = (probes is None or probes.ready) and not run.probe_failure
        elif c.done or self.terminated:
            cs.state.terminated.CopyFrom(_terminated(run))
        else:  # exited, to be started again (back-off, or the start failed)
            cs.state.waiting.reason = c.waiting_reason or "ContainerCreating"
            cs.state.waiting.message = c.waiting_message
            previous = run
        if previous is not None and previous.exit is not None:
            cs.last_state.terminated.CopyFrom(_terminated(previous))
        return cs

    # --- helpers ------------------------------------------------------------------

    def _key(self, c: _Container) -> tuple[str, str]:
        return (self.uid, c.name)

    def _backoff_words(self, c: _Container) -> str:
        seconds = self.back_off.remaining(self._key(c))
        return f"{seconds:.0f}s" if seconds < 60 else f"{seconds / 60:.0f}m{seconds % 60:.0f}s"

    def _instance_dir(self, name: str, attempt: int) -> Path:
        return self.pod_dir / "containers" / name / str(attempt)

    def _log_path(self, name: str, attempt: int) -> Path:
        return self.pod_dir / "logs" / name / f"{attempt}.log"


def _terminated(run: _Run) -> pod_pb2.ContainerStateTerminated:
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
    state.started_at.CopyFrom(_parse_time(info.started_at) or _timestamp(run.started_at))
    if run.finished_at is not None:
        state.finished_at.CopyFrom(_parse_time(info.finished_at)
                                   or _timestamp(run.finished_at))
    return state


def _parse_container_id(uid: str, container_id: str) -> tuple[str, int] | None:
    """``<uid>.<name>.<n>`` → (name, n); None for an ID the worker did not make."""
    prefix, _, rest = container_id.partition(".")
    name, _, attempt = rest.rpartition(".")
    if prefix != uid or not name or not attempt.isdigit():
        return None
    return name, int(attempt)


def _timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def _parse_time(text: str) -> Timestamp | None:
    if not text:
        return None
    ts = Timestamp()
    try:
        ts.FromJsonString(text)
    except ValueError:
        return None
    return ts
