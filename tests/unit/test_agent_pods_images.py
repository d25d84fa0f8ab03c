"""Image pulls in the pod worker, with fakes: policy, one pull per image, back-off."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from google.protobuf import json_format

from agent.pods.images import ImagePuller, pull_policy
from agent.pods.worker import PodWorker
from proto.podium.v1 import pod_pb2
from runtime.images import ImageNotFound, RegistryError
from tests.unit.test_agent_pods_worker import FakeImages, World, make_pod, world

__all__ = ["world"]


@dataclass
class Spawned:
    """Pull threads held until the test lets them run."""

    tasks: list[Callable[[], None]] = field(default_factory=list)

    def __call__(self, task: Callable[[], None]) -> None:
        self.tasks.append(task)

    def run(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task()


class PullingImages(FakeImages):
    def __init__(self) -> None:
        super().__init__()
        self.stored: set[str] = set()
        self.pulls: list[str] = []
        self.fail: dict[str, str] = {}

    def present(self, image: str) -> bool:
        return image in self.stored

    def pull(self, image: str) -> str:
        self.pulls.append(image)
        if image in self.fail:
            raise RegistryError(self.fail[image])
        self.stored.add(image)
        self.missing.discard(image)
        return image


@pytest.fixture
def pulls(world: World) -> tuple[PullingImages, Spawned]:
    images, spawned = PullingImages(), Spawned()
    world.deps.images = images
    world.deps.puller = ImagePuller(images.pull, spawn=spawned)
    return images, spawned


def waiting(status: pod_pb2.PodStatus, i: int = 0) -> tuple[str, str]:
    w = status.container_statuses[i].state.waiting
    return w.reason, w.message


def container(**fields: str) -> pod_pb2.Container:
    return json_format.ParseDict({"name": "c", **fields}, pod_pb2.Container())


@pytest.mark.parametrize(("image", "policy", "wanted"), [
    ("busybox", "", "Always"),
    ("busybox:latest", "", "Always"),
    ("busybox:1.36", "", "IfNotPresent"),
    ("127.0.0.1:5000/app", "", "Always"),
    ("127.0.0.1:5000/app:v2", "", "IfNotPresent"),
    ("busybox@sha256:" + "a" * 64, "", "IfNotPresent"),
    ("busybox", "Never", "Never"),
    ("busybox:1", "Always", "Always"),
])
def test_pull_policy_defaults(image: str, policy: str, wanted: str) -> None:
    assert pull_policy(container(image=image, imagePullPolicy=policy)) == wanted


def test_a_missing_image_is_pulled_then_the_container_starts(
        world: World, pulls: tuple[PullingImages, Spawned]) -> None:
    images, spawned = pulls
    images.missing.add("app:1")
    worker = PodWorker(make_pod(containers=[{"name": "app", "image": "app:1"}]), world.deps)
    status = worker.sync()
    assert waiting(status) == ("ContainerCreating", 'pulling image "app:1"')
    assert not world.containers.started and images.pulls == []  # pulling on its thread
    worker.sync()
    assert len(spawned.tasks) == 1  # not asked twice
    spawned.run()
    status = worker.sync()
    assert images.pulls == ["app:1"] and world.containers.started == ["u1.app.1"]
    assert status.phase == "Running"
    world.containers.exit("u1.app.1", 1)
    worker.sync()
    assert images.pulls == ["app:1"]  # IfNotPresent: there now


def test_always_pulls_before_every_start(world: World,
                                         pulls: tuple[PullingImages, Spawned]) -> None:
    images, spawned = pulls
    images.stored.add("busybox")
    worker = PodWorker(make_pod(), world.deps)
    worker.sync()
    spawned.run()
    worker.sync()
    assert images.pulls == ["busybox"] and world.containers.started == ["u1.app.1"]
    world.containers.exit("u1.app.1", 1)
    worker.sync()
    spawned.run()
    worker.sync()
    assert images.pulls == ["busybox", "busybox"]
    assert world.containers.started == ["u1.app.1", "u1.app.2"]


def test_pull_failures_back_off_and_leave_other_containers_alone(
        world: World, pulls: tuple[PullingImages, Spawned]) -> None:
    images, spawned = pulls
    images.missing.add("nope:1")
    images.stored.add("busybox")
    images.fail["nope:1"] = "manifest nope:1: not found"
    pod = make_pod(containers=[{"name": "bad", "image": "nope:1"},
                               {"name": "good", "image": "busybox", "imagePullPolicy": "Never"}])
    worker = PodWorker(pod, world.deps)
    worker.sync()
    spawned.run()
    status = worker.sync()
    assert waiting(status) == ("ErrImagePull",
                               'failed to pull image "nope:1": manifest nope:1: not found')
    assert world.containers.started == ["u1.good.1"]
    world.clock.now += 1
    status = worker.sync()
    assert waiting(status)[0] == "ImagePullBackOff"
    assert waiting(status)[1].startswith('Back-off pulling image "nope:1": failed to pull')
    assert not spawned.tasks
    world.clock.now += 9  # the first back-off: 10 s
    worker.sync()
    assert len(spawned.tasks) == 1
    spawned.run()
    assert waiting(worker.sync())[0] == "ErrImagePull"
    world.clock.now += 19
    assert waiting(worker.sync())[0] == "ImagePullBackOff"  # 20 s this time
    assert not spawned.tasks
    world.clock.now += 1
    del images.fail["nope:1"]
    worker.sync()
    spawned.run()
    status = worker.sync()
    assert world.containers.started == ["u1.good.1", "u1.bad.1"]
    assert status.phase == "Running" and images.pulls == ["nope:1"] * 3


def test_never_does_not_pull(world: World, pulls: tuple[PullingImages, Spawned]) -> None:
    images, spawned = pulls
    pod = make_pod(containers=[{"name": "app", "image": "app:1", "imagePullPolicy": "Never"}])
    status = PodWorker(pod, world.deps).sync()
    assert waiting(status) == ("ErrImageNeverPull",
                               'Container image "app:1" is not present with pull policy of '
                               "Never")
    assert not spawned.tasks and not world.containers.started


def test_an_invalid_name_is_not_pulled(world: World,
                                       pulls: tuple[PullingImages, Spawned]) -> None:
    pod = make_pod(containers=[{"name": "app", "image": "Bad Name"}])
    assert waiting(PodWorker(pod, world.deps).sync())[0] == "InvalidImageName"
    assert not pulls[1].tasks


def test_one_pull_per_image_for_many_pods(world: World,
                                          pulls: tuple[PullingImages, Spawned]) -> None:
    images, spawned = pulls
    workers = []
    for uid, image in (("u1", "busybox"), ("u2", "docker.io/library/busybox:latest")):
        pod = make_pod(containers=[{"name": "app", "image": image}])
        pod.metadata.uid = uid
        workers.append(PodWorker(pod, world.deps))
    for worker in workers:
        worker.sync()
    assert len(spawned.tasks) == 1
    spawned.run()
    for worker in workers:
        worker.sync()
    assert images.pulls == ["busybox"]
    assert sorted(world.containers.started) == ["u1.app.1", "u2.app.1"]


def test_without_a_puller_a_missing_image_waits(world: World) -> None:
    world.images.missing.add("busybox")
    status = PodWorker(make_pod(), world.deps).sync()
    assert waiting(status) == ("ErrImagePull", "image busybox not found")


def test_puller_reports_any_failure() -> None:
    def pull(image: str) -> str:
        raise ImageNotFound(f"image {image} not found")

    ticket = ImagePuller(pull, spawn=lambda task: task()).pull("x:1")
    assert ticket.done.is_set()
    assert ticket.error == 'failed to pull image "x:1": image x:1 not found'
