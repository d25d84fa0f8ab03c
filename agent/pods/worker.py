"""``PodWorker``: one pod, from its Pod object to running containers and back to nothing.

The agent keeps one worker per pod and calls its steps in order, never two at once:

    adopt(...)         once, before the first sync, after an agent restart: take over
                       the sandbox and containers an earlier agent left running
    sync(pod)          make what is missing (sandbox, pod namespaces, hostPorts,
                       volumes), run the init containers in order to completion, then
                       the app containers; notice exits, restart by restartPolicy and
                       back-off; returns the status
    terminate(grace)   SIGTERM, SIGKILL after the grace period, then remove the
                       containers, the pod cgroup, the volumes, the sandbox, the dirs

``sync`` is a step, not a loop: it never sleeps, so a caller (a thread per pod, or one
loop over all pods) decides how often to look. Time comes from the injected clock
(monotonic seconds) and wall clock, so the unit tests drive both by hand. The parts
live beside it: ``images`` (pull policy and pulls, on threads of their own),
``initc`` (init containers' rules), ``probing`` (probes within a step),
``hostports``, ``status`` (records → ``PodStatus``), ``runs`` (the records).

A pod's files, under ``<pods_dir>/<uid>/``:

    network/                        hosts, hostname, resolv.conf (``agent.network``)
    ns/ipc, ns/uts                  the pod's IPC and UTS namespaces (``agent.network``)
    volumes/<name>/                 emptyDirs (a tmpfs mounted here for medium Memory)
    containers/<name>/<n>/          rootfs (overlay mount point), upper, work of run n
    logs/<name>/<n>.log             the CRI log of run n, kept for ``logs --previous``
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import datetime
from functools import partial
from pathlib import Path

from agent.errors import AgentError
from agent.events import NORMAL, WARNING, container_path
from agent.network.podfiles import pod_dns
from agent.pods import backoff
from agent.pods.deps import WorkerDeps
from agent.pods.errors import PodError, PodSpecError
from agent.pods.hostports import HostPorts, PodPorts
from agent.pods.images import Waiting, pull_policy
from agent.pods.initc import adoption_plan, init_restart_policy
from agent.pods.interfaces import ExitInfo, SandboxInfo
from agent.pods.probe_runners import Result
from agent.pods.probes import ProbeSet
from agent.pods.probing import ContainerExec, ExecIn, exec_as, probe_step
from agent.pods.runs import ContainerRun, ContainerSlot, newest_runs
from agent.pods.spec import (
    ImageFacts,
    SandboxFacts,
    VolumeSource,
    container_config,
    pod_cgroup,
    pod_hostname,
    validate_pod,
)
from agent.pods.status import PodFacts, pod_status, status_key
from proto.podium.v1 import pod_pb2
from runtime.errors import RuntimeError_
from runtime.spec.model import ContainerConfig, Mount

__all__ = ["ContainerExec", "HostPorts", "PodWorker", "WorkerDeps"]

DEFAULT_GRACE = 30.0
EXIT_WAIT = 10.0  # how long terminate waits for a SIGKILLed container's record


class PodWorker:
    def __init__(self, pod: pod_pb2.Pod, deps: WorkerDeps,
                 back_off: backoff.RestartBackOff | None = None) -> None:
        self.pod = pod
        self.deps = deps
        self.uid = pod.metadata.uid
        self.back_off = back_off or backoff.RestartBackOff(deps.clock)
        self.init = [ContainerSlot(c.name, i, init=True)
                     for i, c in enumerate(pod.spec.init_containers)]
        self.containers = [ContainerSlot(c.name, i) for i, c in enumerate(pod.spec.containers)]
        self.volumes: dict[str, VolumeSource] = {}
        self.ports = PodPorts(self.uid)
        self.sandbox_ready = self.namespaces_ready = self.ports_ready = False
        self.volumes_ready = False
        self.pod_ip = ""
        self.netns: Path | None = None
        self.files: Path | None = None
        self.ipc: Path | None = None
        self.uts: Path | None = None
        self.failure = ""  # a pod-level problem, for status.message
        self.failure_reason = ""
        self.invalid = False
        self.terminated = False
        self.start_time = deps.wall()
        # A running pod is synced every loop period; what did not change since the
        # last sync is not worked out again (both are pure functions of their input).
        self._validated: pod_pb2.Pod | None = None  # the pod ``volumes`` came from
        self._status: tuple[Hashable, pod_pb2.PodStatus] | None = None

    @property
    def pod_dir(self) -> Path:
        return self.deps.pods_dir / self.uid

    @property
    def slots(self) -> list[ContainerSlot]:
        """Init containers, then app containers."""
        return self.init + self.containers

    # --- sync ---------------------------------------------------------------------

    def sync(self, pod: pod_pb2.Pod | None = None) -> pod_pb2.PodStatus:
        """One step towards the pod's spec; returns the status it leaves."""
        if pod is not None:
            names = [c.name for c in (*pod.spec.init_containers, *pod.spec.containers)]
            if names != [c.name for c in self.slots]:
                raise PodError(f"pod {self.uid}: its containers cannot change "
                               f"({', '.join(names)}): delete and recreate the pod")
            # Other changes apply to containers started from now on.
            self.invalid = self.invalid and pod == self.pod
            self.pod = pod
        if self.terminated or self.invalid:
            return self.status()
        if not self._prepare():
            return self.status()
        if self._initialize():
            for c in self.containers:
                self._sync_container(c)
        return self.status()

    def _prepare(self) -> bool:
        try:
            if self._validated is not self.pod:
                self.volumes = validate_pod(self.pod, self.pod_dir)
                self._validated = self.pod
        except PodSpecError as e:
            self.invalid = True
            self.failure, self.failure_reason = str(e), "Invalid"
            self._record(None, "Failed", f"Error: {e}", WARNING)
            return False
        spec = self.pod.spec
        try:
            if not self.sandbox_ready:
                if spec.host_network:
                    self.pod_ip = self.deps.host_ip
                    self.files = self.deps.sandbox.host_network_files(self.uid,
                                                                      pod_dns(self.pod))
                else:
                    info = self.deps.sandbox.setup(self.uid, self.pod.metadata.name,
                                                   pod_dns(self.pod))
                    self.pod_ip, self.netns, self.files = str(info.ip), info.netns, info.files
                self.sandbox_ready = True
            holder = self.deps.namespaces
            if not self.namespaces_ready and holder is not None:
                # hostNetwork keeps the node's UTS namespace, and so its hostname.
                hostname = None if spec.host_network else pod_hostname(self.pod)
                held = holder.hold_namespaces(self.uid, hostname, ipc=not spec.host_ipc)
                self.ipc, self.uts = held.ipc, held.uts
                self.namespaces_ready = True
            if not self.ports_ready:
                self.ports.publish(self.deps.host_ports, self.pod, self.pod_ip)
                self.ports_ready = True
            if not self.volumes_ready:
                for volume in self.volumes.values():
                    self.deps.volumes.prepare(volume)
                self.volumes_ready = True
        except (AgentError, RuntimeError_, OSError) as e:
            # Retried on the next sync; what exists stays until then or terminate.
            if self.failure_reason != "SandboxError":
                self._record(None, "FailedCreatePodSandBox", str(e), WARNING)
            self.failure, self.failure_reason = str(e), "SandboxError"
            return False
        self.failure = self.failure_reason = ""
        return True

    def _initialize(self) -> bool:
        """Init containers one at a time, each to completion; True once all have."""
        for c in self.init:
            if not c.completed:
                self._sync_container(c)
                if not c.completed:
                    return False
        return True

    def _sync_container(self, c: ContainerSlot) -> None:
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
            if c.init:
                policy = init_restart_policy(policy)
            if not backoff.should_restart(policy, c.run.exit.exit_code):
                c.done = True
                return
            if self.back_off.in_backoff(self._key(c)):
                if c.waiting_reason != "CrashLoopBackOff":
                    meta = self.pod.metadata
                    self._record(c, "BackOff", f"Back-off restarting failed container {c.name} "
                                 f"in pod {meta.name}_{meta.namespace}({self.uid})", WARNING)
                c.waiting_reason = "CrashLoopBackOff"
                c.waiting_message = (f"back-off {self._backoff_words(c)} restarting failed "
                                     f"container={c.name} pod={self.pod.metadata.name}")
                return
        self._start(c)

    def _ended(self, c: ContainerSlot, run: ContainerRun, info: ExitInfo) -> None:
        run.exit = info
        run.finished_at = self.deps.wall()
        try:
            self.deps.containers.remove(run.container_id)
        finally:
            self.deps.images.release(run.container_id)
        shutil.rmtree(self._instance_dir(c.name, run.attempt), ignore_errors=True)
        self.back_off.record_exit(self._key(c), run.started)

    def _start(self, c: ContainerSlot) -> None:
        if c.waiting_reason == "CreateContainerError" and self.back_off.in_backoff(self._key(c)):
            return  # a start that failed is retried with the same back-off as a crash
        spec = self._spec(c)
        waiting, pulled = self._check_image(c, spec.image, pull_policy(spec))
        if waiting is not None:
            c.waiting_reason, c.waiting_message = waiting
            return
        attempt = c.attempts + 1
        container_id = f"{self.uid}.{c.name}.{attempt}"
        instance = self._instance_dir(c.name, attempt)
        try:
            image = self.deps.images.facts(spec.image)
        except (RuntimeError_, OSError, AgentError) as e:
            self._wait(c, "ErrImagePull", str(e))
            return
        try:
            config = self._config(c, image, instance)
        except (AgentError, RuntimeError_) as e:
            self._wait(c, "CreateContainerConfigError", str(e))
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
            self._wait(c, "CreateContainerError", str(e))
            c.attempts = attempt  # the failed run counts, so its log path is never reused
            self.back_off.record_exit(self._key(c), self.deps.clock())
            return
        c.image.used()
        if not pulled:
            self._record(c, "Pulled", f'Container image "{spec.image}" already present on '
                         "machine")
        self._record(c, "Created", f"Created container {c.name}")
        self._record(c, "Started", f"Started container {c.name}")
        if c.run is not None:
            c.last = c.run
            c.restarts += 1
        c.attempts = attempt
        now = self.deps.clock()
        probes = None if c.init else ProbeSet.for_container(spec, c.where, now)
        c.run = ContainerRun(container_id, attempt, now, self.deps.wall(), probes=probes,
                             process=config.process)
        c.waiting_reason = c.waiting_message = ""

    def _check_image(self, c: ContainerSlot, image: str, policy: str,
                     ) -> tuple[Waiting | None, bool]:
        """``ImageFetch.check`` with the kubelet's events for what it changed; and
        whether a pull succeeded just now."""
        fetch = c.image
        had_ticket, had_pulled, had_failures = fetch.ticket is not None, fetch.pulled, \
            fetch.failures
        waiting = fetch.check(image, policy, self.deps.image_present, self.deps.puller,
                              self.deps.clock(), self.back_off.delay_for)
        pulled = fetch.pulled and not had_pulled
        failed = fetch.failures > had_failures
        if not had_ticket and (fetch.ticket is not None or pulled or failed):
            self._record(c, "Pulling", f'Pulling image "{image}"')
        if pulled:
            self._record(c, "Pulled", f'Successfully pulled image "{image}"')
        if failed:
            self._record(c, "Failed", fetch.error, WARNING)
        if waiting is not None and waiting[0] != c.waiting_reason:
            reason = {"ImagePullBackOff": "BackOff", "ErrImageNeverPull": "ErrImageNeverPull",
                      "InvalidImageName": "InspectFailed"}.get(waiting[0])
            if reason is not None:
                self._record(c, reason, waiting[1], WARNING)
        return waiting, pulled

    def _wait(self, c: ContainerSlot, reason: str, message: str) -> None:
        """``c`` waits for ``reason``; a new reason is a Failed event (not each retry)."""
        if reason != c.waiting_reason:
            self._record(c, "Failed", f"Error: {message}", WARNING)
        c.waiting_reason, c.waiting_message = reason, message

    def _record(self, c: ContainerSlot | None, reason: str, message: str,
                type: str = NORMAL) -> None:
        self.deps.recorder.event(self.pod, reason, message, type,
                                 field_path="" if c is None else container_path(c.name, c.init))

    def _config(self, c: ContainerSlot, image: ImageFacts, instance: Path) -> ContainerConfig:
        return container_config(self.pod, c.index, image, self._sandbox_facts(), instance,
                                lambda user: self.deps.images.lookup_user(image, user),
                                init=c.init)

    def _sandbox_facts(self) -> SandboxFacts:
        return SandboxFacts(pod_dir=self.pod_dir, netns=self.netns, files=self.files,
                            cgroup_parent=self.deps.cgroup_parent, volumes=self.volumes,
                            ipc=self.ipc, uts=self.uts)

    def _make_sub_paths(self, mounts: tuple[Mount, ...]) -> None:
        """A volumeMount's subPath inside an emptyDir is made on first use (as kubelet)."""
        # Compared as strings: a Path per mount (a dozen a container, most of them
        # /proc, /dev and the like) cost 0.5 ms a pod start in pathlib's parsing.
        volume_root = f"{self.pod_dir}/volumes/"
        for mount in mounts:
            if mount.source.startswith(volume_root) and not os.path.exists(mount.source):
                Path(mount.source).mkdir(parents=True, mode=0o777)

    # --- probes -------------------------------------------------------------------

    def _probe(self, c: ContainerSlot, run: ContainerRun) -> None:
        changes = probe_step(run, clock=self.deps.clock, pod_ip=self.pod_ip,
                             exec_for=lambda: self._exec_for(c, run), send=self._signal,
                             default_grace=self._pod_grace())
        if changes is None:
            return
        for probe in changes.runs:
            if probe.result.result is not Result.SUCCESS:
                self._record(c, "Unhealthy", probe.describe(), WARNING)
        if changes.restart:
            kind = changes.restart_message.split(" ", 1)[0].lower()
            self._record(c, "Killing", f"Container {c.name} failed {kind} probe, will be "
                         "restarted")

    def _exec_for(self, c: ContainerSlot, run: ContainerRun) -> ExecIn | None:
        run_exec = self.deps.exec_in_container
        if run_exec is None:
            return None
        if run.process is None:  # an adopted run: its process is rebuilt from the spec
            try:
                image = self.deps.images.facts(self._spec(c).image)
                instance = self._instance_dir(c.name, run.attempt)
                run.process = self._config(c, image, instance).process
            except (AgentError, RuntimeError_, OSError):
                return None  # exec probes stay unknown for this run
        return exec_as(run_exec, run.container_id, run.process)

    def _signal(self, run: ContainerRun, sig: int, all_processes: bool) -> None:
        try:
            self.deps.containers.signal(run.container_id, sig, all_processes)
        except (RuntimeError_, OSError):
            pass  # it ended meanwhile: the exit record says how

    def _pod_grace(self) -> float:
        spec = self.pod.spec
        return (float(spec.termination_grace_period_seconds)
                if spec.HasField("termination_grace_period_seconds") else DEFAULT_GRACE)

    # --- adopt (after an agent restart) ---------------------------------------------

    def adopt(self, sandbox: SandboxInfo | None, container_ids: Iterable[str],
              started: Mapping[str, datetime] | None = None) -> None:
        """Take over what an earlier agent left of this pod, before the first ``sync``.

        ``container_ids`` are the pod's containers in the runtime (``<uid>.<name>.<n>``):
        each spec container's newest run becomes its current run, still running or
        not (the next ``sync`` reads its exit record); older runs are removed. Run
        numbers go on from the logs kept, so a log is never written twice, and the
        restart count is read from them (one log per run started). Init containers
        follow ``agent.pods.initc.adoption_plan``.
        """
        if self.pod.spec.host_network:
            self.pod_ip = self.deps.host_ip
            try:  # the files are only written: rewriting them is harmless
                self.files = self.deps.sandbox.host_network_files(self.uid, pod_dns(self.pod))
                self.sandbox_ready = True
            except (AgentError, OSError):
                pass  # the next sync tries again
        elif sandbox is not None:
            self.pod_ip, self.netns, self.files = str(sandbox.ip), sandbox.netns, sandbox.files
            self.sandbox_ready = True
        newest, stale = newest_runs(self.uid, container_ids, {c.name for c in self.slots})
        plan = adoption_plan([c.name for c in self.init], [c.name for c in self.containers],
                             list(newest))
        stale += [newest.pop(name)[1] for name in plan.stale]
        for container_id in stale:
            self.deps.containers.remove(container_id)
            self.deps.images.release(container_id)
        now = self.deps.clock()
        for c in self.slots:
            logs = self._log_runs(c.name)
            c.attempts = max([*logs, newest.get(c.name, (0, ""))[0]])
            c.restarts = max(len(logs) - 1, 0)
            if c.name in plan.completed:
                c.run = ContainerRun(f"{self.uid}.{c.name}.{c.attempts}", c.attempts, now,
                                     self.deps.wall(), exit=ExitInfo(0), assumed=True)
                c.done = True
                continue
            if c.name not in newest:
                c.restarts = 0
                continue
            attempt, container_id = newest[c.name]
            when = (started or {}).get(container_id) or self.deps.wall()
            spec = self._spec(c)
            probes = None if c.init else ProbeSet.for_container(spec, c.where, now)
            c.run = ContainerRun(container_id, attempt, now, when, probes=probes)
            try:
                c.image_id = self.deps.images.hold(spec.image, container_id)
            except (RuntimeError_, AgentError, OSError):
                pass  # the image went away; the running container does not need it

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
        running = [c for c in self.slots if c.running]
        for c in running:
            self._record(c, "Killing", f"Stopping container {c.name}")
        self._signal_all(running, signal.SIGTERM, all_processes=False)
        self._wait_exits(running, grace)
        still = [c for c in running if c.running]
        self._signal_all(still, signal.SIGKILL, all_processes=True)
        self._wait_exits(still, EXIT_WAIT)
        failures: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - the rest must still be removed
                failures.append(e)

        for c in self.slots:
            run = c.run
            if run is not None and run.exit is None:
                run.exit = ExitInfo(exit_code=137, signal=signal.SIGKILL)
                run.finished_at = self.deps.wall()
            if run is not None and not run.assumed:
                attempt(partial(self.deps.containers.remove, run.container_id))
                attempt(partial(self.deps.images.release, run.container_id))
            c.done = True
        attempt(partial(self.deps.containers.remove_cgroup,
                        pod_cgroup(self.deps.cgroup_parent, self.uid)))
        for volume in self.volumes.values():
            attempt(partial(self.deps.volumes.cleanup, volume))
        attempt(partial(self.ports.unpublish, self.deps.host_ports))
        if not self.pod.spec.host_network:
            attempt(lambda: self.deps.sandbox.teardown(self.uid))
        holder = self.deps.namespaces
        if holder is not None:
            attempt(lambda: holder.release_namespaces(self.uid))
        attempt(lambda: shutil.rmtree(self.pod_dir) if self.pod_dir.exists() else None)
        for c in self.slots:
            self.back_off.forget(self._key(c))
        self.terminated = True
        self.sandbox_ready = self.volumes_ready = self.ports_ready = False
        self.namespaces_ready = False
        if failures:
            first = failures[0]
            raise PodError(f"pod {self.uid}: removing it failed: {first}") from first
        return self.status()

    def _signal_all(self, containers: list[ContainerSlot], sig: int,
                    all_processes: bool) -> None:
        for c in containers:
            assert c.run is not None
            self._signal(c.run, sig, all_processes)

    def _wait_exits(self, containers: list[ContainerSlot], timeout: float) -> None:
        deadline = self.deps.clock() + timeout
        while True:
            for c in containers:
                run = c.run
                if run is not None and run.exit is None:
                    info = self.deps.containers.exit_info(run.container_id)
                    if info is not None:
                        run.exit, run.finished_at = info, self.deps.wall()
            if not any(c.running for c in containers) or self.deps.clock() >= deadline:
                return
            self.deps.sleep(0.05)

    # --- status and helpers -------------------------------------------------------

    def status(self) -> pod_pb2.PodStatus:
        facts = PodFacts(pod_ip=self.pod_ip, host_ip=self.deps.host_ip,
                         start_time=self.start_time, sandbox_ready=self.sandbox_ready,
                         invalid=self.invalid, terminated=self.terminated,
                         message=self.failure, reason=self.failure_reason)
        key = status_key(facts, self.init, self.containers, self.pod)
        if self._status is None or self._status[0] != key:
            # The same object while nothing changed: the pod loop publishes it once.
            self._status = (key, pod_status(facts, self.init, self.containers, self.pod))
        return self._status[1]

    def _spec(self, c: ContainerSlot) -> pod_pb2.Container:
        spec = self.pod.spec
        return spec.init_containers[c.index] if c.init else spec.containers[c.index]

    def _key(self, c: ContainerSlot) -> tuple[str, str]:
        return (self.uid, c.name)

    def _backoff_words(self, c: ContainerSlot) -> str:
        seconds = self.back_off.remaining(self._key(c))
        return f"{seconds:.0f}s" if seconds < 60 else f"{seconds / 60:.0f}m{seconds % 60:.0f}s"

    def _instance_dir(self, name: str, attempt: int) -> Path:
        return self.pod_dir / "containers" / name / str(attempt)

    def _log_path(self, name: str, attempt: int) -> Path:
        return self.pod_dir / "logs" / name / f"{attempt}.log"
