"""The pod worker with fakes: sandbox, starts, restarts and back-off, status, terminate."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from agent.errors import NetworkError
from agent.network.podfiles import DnsConfig, PodDns
from agent.pods.interfaces import ExitInfo
from agent.pods.spec import ImageFacts, VolumeSource, validate_pod
from agent.pods.status import PodFacts, pod_status
from agent.pods.worker import PodWorker, WorkerDeps
from proto.podium.v1 import pod_pb2
from runtime.errors import ContainerNotFound, SetupError
from runtime.images import ImageNotFound
from runtime.spec.model import ContainerConfig, User


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Info:
    netns: Path
    files: Path
    ip: IPv4Address


@dataclass
class FakeSandbox:
    fail: int = 0  # fail this many setups first
    made: list[str] = field(default_factory=list)
    torn: list[str] = field(default_factory=list)
    dns: list[PodDns] = field(default_factory=list)  # what each setup was given
    host_files: list[str] = field(default_factory=list)

    def setup(self, pod_uid: str, pod_name: str, dns: PodDns) -> Info:
        if self.fail:
            self.fail -= 1
            raise NetworkError("bridge ptbr0: missing")
        self.made.append(pod_uid)
        self.dns.append(dns)
        return Info(Path(f"/netns/{pod_uid}"), Path(f"/pods/{pod_uid}/network"),
                    IPv4Address("10.88.0.5"))

    def host_network_files(self, pod_uid: str, dns: PodDns) -> Path:
        self.host_files.append(pod_uid)
        self.dns.append(dns)
        return Path(f"/pods/{pod_uid}/network")

    def teardown(self, pod_uid: str) -> None:
        self.torn.append(pod_uid)


@dataclass
class FakeContainers:
    running: dict[str, ContainerConfig] = field(default_factory=dict)
    exits: dict[str, ExitInfo] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    signals: list[tuple[str, int]] = field(default_factory=list)
    cgroups_removed: list[str] = field(default_factory=list)
    fail_start: str = ""
    ignore_term: bool = False
    start_attempts: list[str] = field(default_factory=list)

    def start(self, container_id: str, config: ContainerConfig, log_path: Path) -> int:
        self.start_attempts.append(container_id)
        if self.fail_start:
            raise SetupError(self.fail_start)
        self.running[container_id] = config
        self.started.append(container_id)
        return 4242

    def exit_info(self, container_id: str) -> ExitInfo | None:
        return self.exits.get(container_id)

    def exit(self, container_id: str, code: int, oom: bool = False) -> None:
        self.exits[container_id] = ExitInfo(code, None, oom, "2024-05-01T12:00:00.5Z",
                                            "2024-05-01T12:00:01Z")
        self.running.pop(container_id, None)

    def signal(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        if container_id not in self.running:
            raise ContainerNotFound(f"container {container_id} does not exist")
        self.signals.append((container_id, sig))
        if sig == signal.SIGKILL or not self.ignore_term:
            self.exit(container_id, 128 + sig)

    def remove(self, container_id: str) -> None:
        self.removed.append(container_id)
        self.running.pop(container_id, None)

    def remove_cgroup(self, path: str) -> None:
        self.cgroups_removed.append(path)


class FakeImages:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.missing: set[str] = set()

    def facts(self, image: str) -> ImageFacts:
        if image in self.missing:
            raise ImageNotFound(f"image {image} not found")
        return ImageFacts(lower=(Path("/layers/a"),), cmd=("sh",))

    def lookup_user(self, facts: ImageFacts, user: str) -> User:
        return User()

    def hold(self, image: str, holder: str) -> str:
        self.held[holder] = image
        return "sha256:" + "a" * 64

    def release(self, holder: str) -> None:
        self.held.pop(holder, None)


@dataclass
class FakeVolumes:
    prepared: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    def prepare(self, volume: VolumeSource) -> None:
        self.prepared.append(volume.name)

    def cleanup(self, volume: VolumeSource) -> None:
        self.cleaned.append(volume.name)


@dataclass
class World:
    clock: Clock
    sandbox: FakeSandbox
    containers: FakeContainers
    images: FakeImages
    volumes: FakeVolumes
    deps: WorkerDeps


@pytest.fixture
def world(tmp_path: Path) -> World:
    clock = Clock()
    w = World(clock, FakeSandbox(), FakeContainers(), FakeImages(), FakeVolumes(),
              None)  # type: ignore[arg-type]
    w.deps = WorkerDeps(sandbox=w.sandbox, containers=w.containers, images=w.images,
                        volumes=w.volumes, pods_dir=tmp_path / "pods", cgroup_parent="podium",
                        clock=clock, wall=lambda: datetime(2024, 5, 1, tzinfo=UTC),
                        sleep=clock.sleep, host_ip="192.0.2.1")
    return w


def make_pod(**spec: Any) -> pod_pb2.Pod:
    doc = {"metadata": {"name": "web", "uid": "u1"},
           "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec}}
    return json_format.ParseDict(doc, pod_pb2.Pod())


def state(status: pod_pb2.PodStatus, i: int = 0) -> str:
    return str(status.container_statuses[i].state.WhichOneof("state"))


def test_an_empty_dir_sub_path_is_made_on_first_use(world: World) -> None:
    pod = make_pod(volumes=[{"name": "v", "emptyDir": {}}], containers=[{
        "name": "a", "image": "busybox",
        "volumeMounts": [{"name": "v", "mountPath": "/logs", "subPath": "a/b"}]}])
    PodWorker(pod, world.deps).sync()
    made = world.deps.pods_dir / "u1" / "volumes" / "v" / "a" / "b"
    assert made.is_dir()
    source = {m.destination: m.source for m in world.containers.running["u1.a.1"].mounts}
    assert source["/logs"] == str(made)


def test_sync_makes_sandbox_volumes_and_containers(world: World) -> None:
    pod = make_pod(volumes=[{"name": "v", "emptyDir": {}}],
                   containers=[{"name": "a", "image": "busybox"}, {"name": "b", "image": "bb"}])
    worker = PodWorker(pod, world.deps)
    status = worker.sync()
    assert world.sandbox.made == ["u1"] and world.volumes.prepared == ["v"]
    assert world.containers.started == ["u1.a.1", "u1.b.1"]
    assert status.phase == "Running" and status.pod_ip == "10.88.0.5"
    assert [state(status, 0), state(status, 1)] == ["running", "running"]
    cs = status.container_statuses[0]
    assert cs.container_id == "podium://u1.a.1" and cs.ready and cs.restart_count == 0
    assert cs.image_id.startswith("sha256:")
    assert {c.type: c.status for c in status.conditions}["Ready"] == "True"
    cfg = world.containers.running["u1.a.1"]
    assert cfg.namespace("network") is not None
    assert cfg.namespace("network").path == "/netns/u1"  # type: ignore[union-attr]
    assert (world.deps.pods_dir / "u1/containers/a/1/upper").is_dir()
    assert world.images.held == {"u1.a.1": "busybox", "u1.b.1": "bb"}
    worker.sync()
    assert world.containers.started == ["u1.a.1", "u1.b.1"]  # nothing twice
    assert world.sandbox.made == ["u1"]


def test_crash_restarts_at_once_then_backs_off(world: World) -> None:
    worker = PodWorker(make_pod(), world.deps)
    worker.sync()
    world.clock.now += 1
    world.containers.exit("u1.app.1", 3)
    status = worker.sync()
    assert world.containers.started == ["u1.app.1", "u1.app.2"]  # immediately
    assert world.containers.removed == ["u1.app.1"] and "u1.app.1" not in world.images.held
    cs = status.container_statuses[0]
    assert state(status) == "running" and cs.restart_count == 1
    assert cs.last_state.terminated.exit_code == 3
    assert cs.last_state.terminated.reason == "Error"

    world.clock.now += 1
    world.containers.exit("u1.app.2", 3)
    status = worker.sync()
    cs = status.container_statuses[0]
    assert state(status) == "waiting" and cs.state.waiting.reason == "CrashLoopBackOff"
    assert "back-off 10s restarting failed container=app pod=web" in cs.state.waiting.message
    assert cs.last_state.terminated.exit_code == 3 and cs.restart_count == 1
    assert status.phase == "Running"
    world.clock.now += 9
    worker.sync()
    assert len(world.containers.started) == 2
    world.clock.now += 1
    status = worker.sync()
    assert world.containers.started[-1] == "u1.app.3"
    assert status.container_statuses[0].restart_count == 2

    world.clock.now += 1
    world.containers.exit("u1.app.3", 1)
    status = worker.sync()
    assert "back-off 20s" in status.container_statuses[0].state.waiting.message


def test_oom_and_completed_reasons(world: World) -> None:
    worker = PodWorker(make_pod(restartPolicy="Never", containers=[
        {"name": "hog", "image": "i"}, {"name": "ok", "image": "i"}]), world.deps)
    worker.sync()
    world.containers.exit("u1.hog.1", 137, oom=True)
    world.containers.exit("u1.ok.1", 0)
    status = worker.sync()
    hog, ok = status.container_statuses
    assert hog.state.terminated.reason == "OOMKilled" and hog.state.terminated.exit_code == 137
    assert ok.state.terminated.reason == "Completed"
    assert hog.state.terminated.finished_at.ToJsonString() == "2024-05-01T12:00:01Z"
    assert status.phase == "Failed"
    assert world.containers.started == ["u1.hog.1", "u1.ok.1"]  # Never: no restart


def test_on_failure_success_is_final(world: World) -> None:
    worker = PodWorker(make_pod(restartPolicy="OnFailure"), world.deps)
    worker.sync()
    world.containers.exit("u1.app.1", 0)
    status = worker.sync()
    assert status.phase == "Succeeded" and state(status) == "terminated"
    assert status.container_statuses[0].state.terminated.reason == "Completed"


def test_on_failure_restarts_a_failure(world: World) -> None:
    worker = PodWorker(make_pod(restartPolicy="OnFailure"), world.deps)
    worker.sync()
    world.containers.exit("u1.app.1", 2)
    status = worker.sync()
    assert world.containers.started == ["u1.app.1", "u1.app.2"]
    assert status.phase == "Running"


def test_always_restarts_a_success(world: World) -> None:
    worker = PodWorker(make_pod(), world.deps)
    worker.sync()
    world.containers.exit("u1.app.1", 0)
    status = worker.sync()
    assert status.container_statuses[0].last_state.terminated.reason == "Completed"
    assert status.container_statuses[0].restart_count == 1


def test_invalid_pod_fails_without_making_anything(world: World) -> None:
    pod = make_pod(containers=[{"name": "app", "image": "i",
                                "resources": {"limits": {"memory": "12Zi"}}}])
    status = PodWorker(pod, world.deps).sync()
    assert status.phase == "Failed" and status.reason == "Invalid"
    assert status.message == \
        'spec.containers[0].resources.limits.memory: "12Zi" is not a quantity'
    assert not world.sandbox.made and not world.containers.started


def test_sandbox_failure_is_retried(world: World) -> None:
    world.sandbox.fail = 1
    worker = PodWorker(make_pod(), world.deps)
    status = worker.sync()
    assert status.phase == "Pending" and "bridge ptbr0" in status.message
    assert state(status) == "waiting"
    status = worker.sync()
    assert status.phase == "Running" and not status.message


def test_missing_image_and_failed_start_wait_with_reasons(world: World) -> None:
    world.images.missing.add("busybox")
    worker = PodWorker(make_pod(), world.deps)
    status = worker.sync()
    cs = status.container_statuses[0]
    assert cs.state.waiting.reason == "ErrImagePull" and "not found" in cs.state.waiting.message
    assert status.phase == "Pending"
    world.images.missing.clear()
    world.containers.fail_start = "exec: /nope: No such file or directory"
    status = worker.sync()
    cs = status.container_statuses[0]
    assert cs.state.waiting.reason == "CreateContainerError"
    assert cs.state.waiting.message == "exec: /nope: No such file or directory"
    assert not world.images.held
    world.containers.fail_start = ""
    status = worker.sync()
    assert state(status) == "running"
    assert world.containers.started == ["u1.app.2"]  # the failed run's number is not reused


def test_a_start_that_keeps_failing_is_retried_with_back_off(world: World) -> None:
    world.containers.fail_start = "exec: /nope: No such file or directory"
    worker = PodWorker(make_pod(), world.deps)
    worker.sync()
    worker.sync()  # the first retry of a streak is immediate
    tries = len(world.containers.start_attempts)
    for _ in range(5):  # then it waits out the back-off, not every loop step
        worker.sync()
    assert len(world.containers.start_attempts) == tries
    world.clock.now += 10
    worker.sync()
    assert len(world.containers.start_attempts) == tries + 1


def test_host_network_has_no_sandbox(world: World) -> None:
    worker = PodWorker(make_pod(hostNetwork=True), world.deps)
    status = worker.sync()
    assert not world.sandbox.made and status.pod_ip == "192.0.2.1"
    assert world.containers.running["u1.app.1"].namespace("network") is None
    worker.terminate(0)
    assert not world.sandbox.torn


def test_the_sandbox_gets_the_pods_dns_settings(world: World) -> None:
    pod = make_pod(dnsPolicy="Default", dnsConfig={
        "nameservers": ["192.0.2.9"], "searches": ["corp.test"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]})
    pod.metadata.namespace = "prod"
    PodWorker(pod, world.deps).sync()
    assert world.sandbox.dns == [PodDns("prod", "Default", False, DnsConfig(
        ("192.0.2.9",), ("corp.test",), ("ndots:2", "rotate")))]


def test_host_network_pods_get_files_by_their_dns_policy(world: World) -> None:
    worker = PodWorker(make_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"),
                       world.deps)
    worker.sync()
    assert world.sandbox.host_files == ["u1"] and not world.sandbox.made
    assert world.sandbox.dns == [PodDns("default", "ClusterFirstWithHostNet", True)]
    mounts = {m.destination: m.source for m in world.containers.running["u1.app.1"].mounts}
    assert mounts["/etc/resolv.conf"] == "/pods/u1/network/resolv.conf"
    # An agent taking the pod over writes them again (its containers may restart).
    again = PodWorker(make_pod(hostNetwork=True), world.deps)
    again.adopt(None, ["u1.app.1"])
    assert world.sandbox.host_files == ["u1", "u1"]


def test_terminate_term_then_removes_everything(world: World) -> None:
    pod = make_pod(volumes=[{"name": "v", "emptyDir": {}}])
    worker = PodWorker(pod, world.deps)
    worker.sync()
    status = worker.terminate(5)
    assert world.containers.signals == [("u1.app.1", signal.SIGTERM)]
    assert world.containers.removed == ["u1.app.1"]
    assert world.containers.cgroups_removed == ["podium/podu1"]
    assert world.volumes.cleaned == ["v"] and world.sandbox.torn == ["u1"]
    assert not (world.deps.pods_dir / "u1").exists() and not world.images.held
    assert state(status) == "terminated"
    assert status.container_statuses[0].state.terminated.exit_code == 128 + signal.SIGTERM
    assert worker.sync().container_statuses[0].state.WhichOneof("state") == "terminated"
    assert world.containers.started == ["u1.app.1"]  # a terminated pod stays down


def test_terminate_kills_after_the_grace_period(world: World) -> None:
    world.containers.ignore_term = True
    worker = PodWorker(make_pod(terminationGracePeriodSeconds=3), world.deps)
    worker.sync()
    start = world.clock.now
    worker.terminate()
    assert world.containers.signals == [("u1.app.1", signal.SIGTERM),
                                        ("u1.app.1", signal.SIGKILL)]
    assert world.clock.now - start == pytest.approx(3, abs=0.1)


def test_terminate_carries_on_after_a_failure(world: World) -> None:
    from agent.pods.errors import PodError

    worker = PodWorker(make_pod(), world.deps)
    worker.sync()

    def broken(pod_uid: str) -> None:
        raise NetworkError("veth pt123: busy")

    world.sandbox.teardown = broken  # type: ignore[method-assign]
    with pytest.raises(PodError, match="veth pt123: busy"):
        worker.terminate(0)
    assert world.containers.removed == ["u1.app.1"]
    assert not (world.deps.pods_dir / "u1").exists()


# --- probes -------------------------------------------------------------------------


@dataclass
class FakeExec:
    """Exec probes: ``codes[args[-1]]`` is the exit code (0 if not given)."""

    codes: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, tuple[str, ...], float, int]] = field(default_factory=list)

    def __call__(self, container_id: str, process: Any, timeout: float) -> int:
        self.calls.append((container_id, process.args, timeout, process.user.uid))
        code = self.codes.get(process.args[-1], 0)
        if code < 0:
            raise TimeoutError("still running")
        return code


def probe_pod(**container: Any) -> pod_pb2.Pod:
    return make_pod(containers=[{"name": "app", "image": "busybox", **container}])


def conditions(status: pod_pb2.PodStatus) -> dict[str, str]:
    return {c.type: c.status for c in status.conditions}


def test_liveness_failure_kills_and_restarts_the_container(world: World) -> None:
    run_exec = FakeExec()
    world.deps.exec_in_container = run_exec
    pod = probe_pod(livenessProbe={"exec": {"command": ["test", "-f", "/tmp/alive"]},
                                   "periodSeconds": 5, "failureThreshold": 2})
    worker = PodWorker(pod, world.deps)
    worker.sync()
    assert not run_exec.calls  # the sync that starts a container probes it next time
    worker.sync()
    assert run_exec.calls == [("u1.app.1", ("test", "-f", "/tmp/alive"), 1.0, 0)]
    run_exec.codes["/tmp/alive"] = 1
    world.clock.now += 5
    worker.sync()
    assert not world.containers.signals  # one failure is below the threshold
    world.clock.now += 5
    status = worker.sync()
    assert world.containers.signals == [("u1.app.1", signal.SIGTERM)]
    assert len(run_exec.calls) == 3
    assert not status.container_statuses[0].ready
    assert conditions(status)["Ready"] == "False"
    world.containers.exits["u1.app.1"] = ExitInfo(0)  # it took the SIGTERM well
    run_exec.codes.clear()
    status = worker.sync()
    assert world.containers.started == ["u1.app.1", "u1.app.2"]  # the first restart: at once
    cs = status.container_statuses[0]
    assert cs.restart_count == 1 and state(status) == "running"
    assert cs.last_state.terminated.reason == "Error"
    assert cs.last_state.terminated.message == (
        "Liveness probe failed 2 times in a row: command ['test', '-f', '/tmp/alive'] "
        "exited with 1")
    # The new run has fresh probes: its first is due at once, and passes.
    worker.sync()
    assert run_exec.calls[-1][0] == "u1.app.2"
    assert not world.containers.signals[1:]


def test_probe_kill_escalates_after_the_probes_grace(world: World) -> None:
    world.containers.ignore_term = True
    run_exec = FakeExec({"check": 1})
    world.deps.exec_in_container = run_exec
    pod = probe_pod(livenessProbe={"exec": {"command": ["check"]}, "failureThreshold": 1,
                                   "terminationGracePeriodSeconds": 4})
    worker = PodWorker(pod, world.deps)
    worker.sync()
    worker.sync()
    assert world.containers.signals == [("u1.app.1", signal.SIGTERM)]
    world.clock.now += 3
    worker.sync()  # no waiting in sync, no SIGKILL yet
    assert len(world.containers.signals) == 1 and len(run_exec.calls) == 1
    world.clock.now += 1
    worker.sync()
    assert world.containers.signals[-1] == ("u1.app.1", signal.SIGKILL)
    status = worker.sync()
    cs = status.container_statuses[0]
    assert cs.restart_count == 1 and cs.last_state.terminated.exit_code == 137
    assert cs.last_state.terminated.reason == "Error"


def test_probe_failure_with_restart_policy_never_stays_down(world: World) -> None:
    world.deps.exec_in_container = FakeExec({"check": 1})
    pod = make_pod(restartPolicy="Never", containers=[
        {"name": "app", "image": "busybox",
         "livenessProbe": {"exec": {"command": ["check"]}, "failureThreshold": 1}}])
    worker = PodWorker(pod, world.deps)
    worker.sync()
    worker.sync()
    status = worker.sync()
    assert state(status) == "terminated" and status.phase == "Failed"
    assert "Liveness probe failed" in status.container_statuses[0].state.terminated.message


def test_readiness_sets_ready_and_the_pod_conditions(world: World) -> None:
    run_exec = FakeExec({"ready": 1})
    world.deps.exec_in_container = run_exec
    pod = make_pod(containers=[
        {"name": "app", "image": "busybox",
         "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 2,
                            "failureThreshold": 2}},
        {"name": "side", "image": "busybox"}])
    worker = PodWorker(pod, world.deps)
    status = worker.sync()
    app, side = status.container_statuses
    assert not app.ready and side.ready  # no readiness probe: ready once running
    assert conditions(status)["Ready"] == "False"
    assert conditions(status)["ContainersReady"] == "False"
    run_exec.codes["ready"] = 0
    world.clock.now += 2
    status = worker.sync()
    assert status.container_statuses[0].ready
    assert conditions(status)["Ready"] == conditions(status)["ContainersReady"] == "True"
    run_exec.codes["ready"] = 1
    world.clock.now += 2
    assert conditions(worker.sync())["Ready"] == "True"  # below the failure threshold
    world.clock.now += 2
    status = worker.sync()
    assert conditions(status)["Ready"] == "False" and not status.container_statuses[0].ready
    assert not world.containers.signals  # readiness never restarts
    world.clock.now += 1
    worker.sync()
    assert len(run_exec.calls) == 3  # not due again before its period


def test_startup_probe_gates_started_and_ready(world: World) -> None:
    run_exec = FakeExec({"up": 1})
    world.deps.exec_in_container = run_exec
    pod = probe_pod(startupProbe={"exec": {"command": ["up"]}, "periodSeconds": 1,
                                  "failureThreshold": 5},
                    livenessProbe={"exec": {"command": ["live"]}})
    worker = PodWorker(pod, world.deps)
    worker.sync()
    cs = worker.sync().container_statuses[0]
    assert not cs.started and not cs.ready
    assert [c[1] for c in run_exec.calls] == [("up",)]  # liveness waits for startup
    run_exec.codes["up"] = 0
    world.clock.now += 1
    cs = worker.sync().container_statuses[0]
    assert cs.started and cs.ready
    assert [c[1] for c in run_exec.calls] == [("up",), ("up",), ("live",)]


def test_exec_probes_without_an_exec_change_nothing(world: World) -> None:
    pod = probe_pod(livenessProbe={"exec": {"command": ["check"]}, "failureThreshold": 1})
    worker = PodWorker(pod, world.deps)
    worker.sync()
    world.clock.now += 30
    worker.sync()
    assert not world.containers.signals


def test_bad_probe_fails_the_pod_early(world: World) -> None:
    pod = probe_pod(livenessProbe={"httpGet": {"port": {"strValue": "web"}}})
    status = PodWorker(pod, world.deps).sync()
    assert status.phase == "Failed" and status.reason == "Invalid"
    assert status.message == ('spec.containers[0].livenessProbe.httpGet.port: '
                              'the container has no TCP port named "web"')
    assert not world.sandbox.made


def test_adopted_run_gets_probes(world: World) -> None:
    run_exec = FakeExec({"ready": 0})
    world.deps.exec_in_container = run_exec
    pod = probe_pod(readinessProbe={"exec": {"command": ["ready"]}})
    worker = PodWorker(pod, world.deps)
    worker.adopt(Info(Path("/netns/u1"), Path("/pods/u1/network"), IPv4Address("10.88.0.5")),
                 ["u1.app.3"])
    status = worker.sync()
    assert run_exec.calls[0][:2] == ("u1.app.3", ("ready",))
    assert status.container_statuses[0].ready


# --- hostPorts ----------------------------------------------------------------------


@dataclass
class FakeNat:
    published: list[tuple[str, int, int, str]] = field(default_factory=list)
    taken: set[int] = field(default_factory=set)

    def publish(self, pod_ip: str, container_port: int, host_port: int,
                protocol: str) -> None:
        if host_port in self.taken:
            raise NetworkError(f"hostPort tcp/{host_port}: already published")
        self.published.append((pod_ip, container_port, host_port, protocol))

    def unpublish(self, pod_ip: str, container_port: int, host_port: int,
                  protocol: str) -> None:
        self.published.remove((pod_ip, container_port, host_port, protocol))


def test_host_ports_are_published_with_the_sandbox_and_removed_on_terminate(
        world: World) -> None:
    nat = FakeNat()
    world.deps.host_ports = nat
    pod = make_pod(containers=[
        {"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080},
                                              {"containerPort": 81}]},
        {"name": "b", "image": "i", "ports": [{"containerPort": 53, "hostPort": 5353,
                                               "protocol": "UDP"}]}])
    worker = PodWorker(pod, world.deps)
    worker.sync()
    worker.sync()
    assert nat.published == [("10.88.0.5", 80, 8080, "TCP"), ("10.88.0.5", 53, 5353, "UDP")]
    worker.terminate(0)
    assert nat.published == [] and world.sandbox.torn == ["u1"]


def test_host_port_conflict_starts_nothing_and_is_retried(world: World) -> None:
    nat = FakeNat(taken={8081})
    world.deps.host_ports = nat
    pod = make_pod(containers=[{"name": "a", "image": "i", "ports": [
        {"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8081}]}])
    worker = PodWorker(pod, world.deps)
    status = worker.sync()
    assert status.phase == "Pending" and "hostPort tcp/8081" in status.message
    assert nat.published == [] and not world.containers.started  # none half made
    nat.taken.clear()
    status = worker.sync()
    assert status.phase == "Running" and len(nat.published) == 2


def test_host_ports_without_a_nat_table_are_an_error(world: World) -> None:
    pod = make_pod(containers=[{"name": "a", "image": "i", "ports": [
        {"containerPort": 80, "hostPort": 8080}]}])
    status = PodWorker(pod, world.deps).sync()
    assert "hostPort 8080: no NAT table" in status.message and status.phase == "Pending"


def test_host_network_publishes_nothing(world: World) -> None:
    nat = FakeNat()
    world.deps.host_ports = nat
    pod = make_pod(hostNetwork=True, containers=[{"name": "a", "image": "i", "ports": [
        {"containerPort": 80, "hostPort": 80}]}])
    assert PodWorker(pod, world.deps).sync().phase == "Running"
    assert nat.published == []


# --- the pod's IPC and UTS namespaces -------------------------------------------------


@dataclass
class Held:
    ipc: Path | None
    uts: Path | None


@dataclass
class FakeNamespaces:
    held: list[tuple[str, str | None, bool]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def hold_namespaces(self, pod_uid: str, hostname: str | None, ipc: bool = True) -> Held:
        self.held.append((pod_uid, hostname, ipc))
        return Held(Path(f"/pods/{pod_uid}/ns/ipc") if ipc else None,
                    Path(f"/pods/{pod_uid}/ns/uts") if hostname else None)

    def pod_namespaces(self, pod_uid: str) -> Held:
        return Held(None, None)

    def release_namespaces(self, pod_uid: str) -> None:
        self.released.append(pod_uid)


def test_containers_join_the_pods_ipc_and_uts_namespaces(world: World) -> None:
    holder = FakeNamespaces()
    world.deps.namespaces = holder
    pod = make_pod(initContainers=[{"name": "init", "image": "i"}],
                   containers=[{"name": "a", "image": "i"}, {"name": "b", "image": "i"}])
    worker = PodWorker(pod, world.deps)
    worker.sync()
    world.containers.exit("u1.init.1", 0)
    worker.sync()
    assert holder.held == [("u1", "web", True)]  # once for the pod
    for cid in ("u1.a.1", "u1.b.1"):
        cfg = world.containers.running[cid]
        assert cfg.namespace("ipc").path == "/pods/u1/ns/ipc"  # type: ignore[union-attr]
        assert cfg.namespace("uts").path == "/pods/u1/ns/uts"  # type: ignore[union-attr]
        assert cfg.hostname is None
    worker.terminate(0)
    assert holder.released == ["u1"]


def test_host_network_keeps_the_nodes_uts_namespace(world: World) -> None:
    holder = FakeNamespaces()
    world.deps.namespaces = holder
    worker = PodWorker(make_pod(hostNetwork=True), world.deps)
    worker.sync()
    assert holder.held == [("u1", None, True)]
    cfg = world.containers.running["u1.app.1"]
    assert cfg.namespace("uts") is None and cfg.hostname is None
    assert cfg.namespace("ipc").path == "/pods/u1/ns/ipc"  # type: ignore[union-attr]
    worker.terminate(0)
    assert holder.released == ["u1"] and world.sandbox.torn == []


def test_the_sandbox_is_the_default_namespace_holder(world: World) -> None:
    class Both(FakeSandbox, FakeNamespaces):
        pass

    sandbox = Both()
    deps = WorkerDeps(sandbox=sandbox, containers=world.containers, images=world.images,
                      volumes=world.volumes, pods_dir=world.deps.pods_dir,
                      cgroup_parent="podium")
    assert deps.namespaces is sandbox and world.deps.namespaces is None


def test_an_unchanged_pod_hands_back_the_same_status_and_a_change_a_new_one(
        world: World) -> None:
    worker = PodWorker(make_pod(), world.deps)
    running = worker.sync()
    assert state(running) == "running"
    assert worker.sync() is running  # nothing changed: nothing built again
    world.containers.exit("u1.app.1", 1)
    exited = worker.sync()
    assert exited is not running and exited.container_statuses[0].restart_count == 1
    assert exited.container_statuses[0].last_state.terminated.exit_code == 1
    # The same answer as a worker that never kept one would give.
    fresh = pod_status(PodFacts(worker.pod_ip, "192.0.2.1", worker.start_time,
                                worker.sandbox_ready, worker.invalid, worker.terminated),
                       worker.init, worker.containers, worker.pod)
    assert worker.sync() == fresh
    updated = make_pod(containers=[{"name": "app", "image": "busybox:2"}])
    assert worker.sync(updated).container_statuses[0].image == "busybox:2"


def test_a_pod_is_validated_again_only_when_it_changes(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.pods.worker as worker_module

    checked: list[pod_pb2.Pod] = []

    def counting(pod: pod_pb2.Pod, pod_dir: Path) -> Any:
        checked.append(pod)
        return validate_pod(pod, pod_dir)

    monkeypatch.setattr(worker_module, "validate_pod", counting)
    worker = PodWorker(make_pod(), world.deps)
    worker.sync()
    worker.sync()
    assert len(checked) == 1
    worker.sync(make_pod(restartPolicy="Sometimes"))
    assert len(checked) == 2
    assert worker.sync().phase == "Failed"  # the new pod is the one checked
    assert len(checked) == 2
