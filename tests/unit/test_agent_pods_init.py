"""Init containers in the pod worker, with fakes: order, retries, status, adoption."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from agent.pods.initc import adoption_plan, init_restart_policy
from agent.pods.interfaces import ExitInfo
from agent.pods.status import display_status
from agent.pods.worker import PodWorker
from proto.podium.v1 import pod_pb2
from tests.unit.test_agent_pods_worker import Info, World, make_pod, world

__all__ = ["world"]

IP = IPv4Address("10.88.0.5")
INITS = [{"name": "one", "image": "busybox"}, {"name": "two", "image": "busybox"}]


def init_pod(**spec: Any) -> pod_pb2.Pod:
    return make_pod(initContainers=INITS, **spec)


def shown(worker: PodWorker, status: pod_pb2.PodStatus) -> str:
    pod = pod_pb2.Pod()
    pod.CopyFrom(worker.pod)
    pod.status.CopyFrom(status)
    return display_status(pod)


def conditions(status: pod_pb2.PodStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.message) for c in status.conditions}


def init_states(status: pod_pb2.PodStatus) -> list[str]:
    return [str(cs.state.WhichOneof("state")) for cs in status.init_container_statuses]


def test_init_containers_run_in_order_before_the_app(world: World) -> None:
    worker = PodWorker(init_pod(), world.deps)
    status = worker.sync()
    assert world.containers.started == ["u1.one.1"]
    assert init_states(status) == ["running", "waiting"]
    two = status.init_container_statuses[1]
    assert two.state.waiting.reason == "PodInitializing"
    app = status.container_statuses[0]
    assert app.state.waiting.reason == "PodInitializing" and not app.ready
    assert status.phase == "Pending" and shown(worker, status) == "Init:0/2"
    assert conditions(status)["Initialized"] == (
        "False", "containers with incomplete status: [one two]")
    cfg = world.containers.running["u1.one.1"]
    assert cfg.namespace("network").path == "/netns/u1"  # type: ignore[union-attr]

    worker.sync()
    assert world.containers.started == ["u1.one.1"]  # one at a time
    world.containers.exit("u1.one.1", 0)
    status = worker.sync()
    assert world.containers.started == ["u1.one.1", "u1.two.1"]
    one = status.init_container_statuses[0]
    assert one.state.terminated.reason == "Completed" and one.ready
    assert shown(worker, status) == "Init:1/2"

    world.containers.exit("u1.two.1", 0)
    status = worker.sync()
    assert world.containers.started == ["u1.one.1", "u1.two.1", "u1.app.1"]
    assert init_states(status) == ["terminated", "terminated"]
    assert status.phase == "Running" and shown(worker, status) == "Running"
    assert conditions(status)["Initialized"] == ("True", "")
    assert conditions(status)["Ready"] == ("True", "")

    # Completed init containers never run again, even when the app restarts.
    world.containers.exit("u1.app.1", 1)
    worker.sync()
    assert world.containers.started[-1] == "u1.app.2"
    assert [c for c in world.containers.started if ".one." in c] == ["u1.one.1"]


def test_a_failed_init_container_is_retried_with_back_off(world: World) -> None:
    worker = PodWorker(init_pod(restartPolicy="Always"), world.deps)
    worker.sync()
    world.containers.exit("u1.one.1", 2)
    status = worker.sync()
    assert world.containers.started == ["u1.one.1", "u1.one.2"]  # the first retry: at once
    one = status.init_container_statuses[0]
    assert one.restart_count == 1 and one.last_state.terminated.reason == "Error"
    world.clock.now += 1
    world.containers.exit("u1.one.2", 2)
    status = worker.sync()
    one = status.init_container_statuses[0]
    assert one.state.waiting.reason == "CrashLoopBackOff"
    assert shown(worker, status) == "Init:CrashLoopBackOff"
    assert status.phase == "Pending"
    assert status.container_statuses[0].state.waiting.reason == "PodInitializing"
    world.clock.now += 10
    worker.sync()
    assert world.containers.started[-1] == "u1.one.3"
    world.containers.exit("u1.one.3", 0)
    worker.sync()
    assert world.containers.started[-1] == "u1.two.1"


def test_a_failed_init_container_fails_the_pod_with_never(world: World) -> None:
    worker = PodWorker(init_pod(restartPolicy="Never"), world.deps)
    worker.sync()
    world.containers.exit("u1.one.1", 3)
    status = worker.sync()
    assert world.containers.started == ["u1.one.1"]  # neither again nor the next
    assert status.phase == "Failed"
    one = status.init_container_statuses[0]
    assert one.state.terminated.reason == "Error" and one.state.terminated.exit_code == 3
    assert shown(worker, status) == "Init:Error"
    assert status.container_statuses[0].state.waiting.reason == "PodInitializing"
    worker.sync()
    assert world.containers.started == ["u1.one.1"]


def test_a_successful_init_container_is_final_whatever_the_policy(world: World) -> None:
    worker = PodWorker(init_pod(restartPolicy="Always"), world.deps)
    worker.sync()
    world.containers.exit("u1.one.1", 0)
    world.clock.now += 1
    worker.sync()
    world.containers.exit("u1.two.1", 0)
    worker.sync()
    worker.sync()
    assert world.containers.started == ["u1.one.1", "u1.two.1", "u1.app.1"]


def test_terminate_stops_a_running_init_container(world: World) -> None:
    worker = PodWorker(init_pod(), world.deps)
    worker.sync()
    worker.terminate(0)
    assert "u1.one.1" in world.containers.removed
    assert world.sandbox.torn == ["u1"]


def test_adoption_with_app_containers_takes_the_init_containers_as_done(
        world: World) -> None:
    logs = world.deps.pods_dir / "u1" / "logs"
    for name, runs in (("one", 2), ("two", 1), ("app", 1)):
        (logs / name).mkdir(parents=True)
        for n in range(1, runs + 1):
            (logs / name / f"{n}.log").write_text("")
    worker = PodWorker(init_pod(), world.deps)
    worker.adopt(Info(Path("/netns/u1"), Path("/pods/u1/network"), IP),
                 ["u1.app.1"])
    status = worker.sync()
    assert world.containers.started == []  # nothing re-run, the app kept
    assert init_states(status) == ["terminated", "terminated"]
    one = status.init_container_statuses[0]
    assert one.state.terminated.reason == "Completed" and one.restart_count == 1
    assert status.phase == "Running" and shown(worker, status) == "Running"
    worker.terminate(0)
    assert world.containers.removed == ["u1.app.1"]  # the assumed runs hold nothing


def test_adoption_during_initialisation_goes_on_from_the_running_one(world: World) -> None:
    worker = PodWorker(init_pod(), world.deps)
    worker.adopt(Info(Path("/netns/u1"), Path("/pods/u1/network"), IP),
                 ["u1.two.1"])
    status = worker.sync()
    assert world.containers.started == []
    assert init_states(status) == ["terminated", "running"]
    world.containers.exits["u1.two.1"] = ExitInfo(0)
    worker.sync()
    assert world.containers.started == ["u1.app.1"]


def test_adoption_plan() -> None:
    names, apps = ["a", "b", "c"], ["x"]
    assert adoption_plan(names, apps, []) == (frozenset(), None, frozenset())
    assert adoption_plan(names, apps, ["x", "b"]) == (frozenset(names), None, frozenset("b"))
    assert adoption_plan(names, apps, ["c"]) == (frozenset("ab"), "c", frozenset())
    assert adoption_plan(names, apps, ["a", "b"]) == (frozenset("a"), "b", frozenset("a"))


def test_init_restart_policy() -> None:
    assert init_restart_policy("Always") == init_restart_policy("") == "OnFailure"
    assert init_restart_policy("OnFailure") == "OnFailure"
    assert init_restart_policy("Never") == "Never"
