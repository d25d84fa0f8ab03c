"""The agent's pod loop with a fake source and fake workers: add, update, remove,
replace, errors kept to their pod, terminations on the injected spawner."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf import json_format

from agent.podloop import PodLoop
from agent.sources import PodEvent, PodEventType
from proto.podium.v1 import pod_pb2

ADD, UPDATE, REMOVE, ERROR = (PodEventType.ADD, PodEventType.UPDATE, PodEventType.REMOVE,
                              PodEventType.ERROR)


def make_pod(name: str, *containers: str, image: str = "busybox") -> pod_pb2.Pod:
    doc = {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
           "spec": {"containers": [{"name": c, "image": image} for c in containers or ("c",)]}}
    return json_format.ParseDict(doc, pod_pb2.Pod())


@dataclass
class FakeSource:
    batches: list[list[PodEvent]] = field(default_factory=list)
    fail: bool = False

    def poll(self) -> list[PodEvent]:
        if self.fail:
            raise OSError("manifests: gone")
        return self.batches.pop(0) if self.batches else []


@dataclass
class FakeWorker:
    pod: pod_pb2.Pod
    log: list[str]
    fail: bool = False
    synced: list[pod_pb2.Pod | None] = field(default_factory=list)
    terminated: list[float | None] = field(default_factory=list)

    def sync(self, pod: pod_pb2.Pod | None = None) -> pod_pb2.PodStatus:
        self.synced.append(pod)
        if pod is not None:
            self.pod = pod
        self.log.append(f"sync {self.pod.metadata.name}")
        if self.fail:
            raise RuntimeError(f"pod {self.pod.metadata.name}: broken")
        return pod_pb2.PodStatus(phase="Running", pod_ip="10.88.0.2")

    def terminate(self, grace: float | None = None) -> pod_pb2.PodStatus:
        self.log.append(f"terminate {self.pod.metadata.name}")
        self.terminated.append(grace)
        return pod_pb2.PodStatus(phase="Succeeded")


@dataclass
class World:
    source: FakeSource
    loop: PodLoop
    workers: dict[str, FakeWorker]
    log: list[str]
    queued: list[Callable[[], None]]


def world(inline: bool = True) -> World:
    log: list[str] = []
    workers: dict[str, FakeWorker] = {}
    queued: list[Callable[[], None]] = []

    def make(pod: pod_pb2.Pod) -> FakeWorker:
        worker = FakeWorker(pod, log)
        workers[pod.metadata.name] = worker
        log.append(f"make {pod.metadata.name}")
        return worker

    source = FakeSource()
    spawn = (lambda task: task()) if inline else queued.append
    loop = PodLoop(source, make, clock=lambda: 5.0, spawn=spawn)
    return World(source, loop, workers, log, queued)


def event(kind: PodEventType, pod: pod_pb2.Pod | None, message: str = "") -> PodEvent:
    return PodEvent(kind, pod, "/manifests/a.yaml", message)


def test_an_added_pod_gets_one_worker_synced_every_step() -> None:
    w = world()
    w.source.batches.append([event(ADD, make_pod("web"))])
    w.loop.step()
    w.loop.step()
    assert w.log == ["make web", "sync web", "sync web"]
    [pod] = w.loop.pods()
    assert pod.metadata.name == "web" and pod.status.phase == "Running"
    assert w.loop.last_step == 5.0


def test_an_update_reaches_the_worker_once() -> None:
    w = world()
    w.source.batches += [[event(ADD, make_pod("web"))],
                         [event(UPDATE, make_pod("web", image="busybox:2"))]]
    w.loop.step()
    w.loop.step()
    w.loop.step()
    synced = w.workers["web"].synced
    assert synced[0] is None and synced[2] is None
    assert synced[1] is not None and synced[1].spec.containers[0].image == "busybox:2"
    assert w.loop.pods()[0].spec.containers[0].image == "busybox:2"


def test_a_removed_pod_is_terminated_with_its_own_grace_and_dropped() -> None:
    w = world()
    w.source.batches += [[event(ADD, make_pod("web")), event(ADD, make_pod("db"))],
                         [event(REMOVE, make_pod("web"))]]
    w.loop.step()
    w.loop.step()
    assert "terminate web" in w.log
    assert w.workers["web"].terminated == [None]  # None: the pod's grace period
    assert [p.metadata.name for p in w.loop.pods()] == ["db"]


def test_a_pod_terminating_stays_listed_and_unsynced_until_done() -> None:
    w = world(inline=False)
    w.source.batches += [[event(ADD, make_pod("web"))], [event(REMOVE, make_pod("web"))],
                         [event(ADD, make_pod("web"))]]
    w.loop.step()
    w.loop.step()
    w.loop.step()  # added again while still terminating: waits
    assert w.log == ["make web", "sync web"]
    assert len(w.loop.pods()) == 1
    w.queued.pop()()
    w.loop.step()
    assert w.log[-3:] == ["terminate web", "make web", "sync web"]


def test_changed_containers_replace_the_pod() -> None:
    w = world()
    w.source.batches += [[event(ADD, make_pod("web", "a"))],
                         [event(UPDATE, make_pod("web", "a", "b"))]]
    w.loop.step()
    w.loop.step()
    assert w.log == ["make web", "sync web", "terminate web", "make web", "sync web"]
    assert len(w.workers["web"].pod.spec.containers) == 2


def test_one_failing_pod_never_stops_the_others() -> None:
    w = world()
    w.source.batches.append([event(ADD, make_pod("bad")), event(ADD, make_pod("good"))])
    w.loop.step()
    w.workers["bad"].fail = True
    w.loop.step()
    pods = {p.metadata.name: p for p in w.loop.pods()}
    assert pods["good"].status.phase == "Running"
    assert pods["bad"].status.reason == "SyncError"
    assert pods["bad"].status.message == "pod bad: broken"
    assert pods["bad"].status.phase == "Running"  # the last status it had, kept
    assert w.log.count("sync good") == 2


def test_a_worker_that_cannot_be_made_is_retried_and_reported() -> None:
    w = world()
    calls = []

    def make(pod: pod_pb2.Pod) -> FakeWorker:
        calls.append(pod.metadata.name)
        if len(calls) == 1:
            raise OSError("pods dir: read-only")
        return FakeWorker(pod, w.log)

    w.loop.make_worker = make
    w.source.batches.append([event(ADD, make_pod("web"))])
    w.loop.step()
    assert w.loop.pods()[0].status.reason == "SyncError"
    assert w.loop.pods()[0].status.phase == "Pending"
    w.loop.step()
    assert calls == ["web", "web"] and w.loop.pods()[0].status.phase == "Running"


def test_source_errors_are_recorded_and_a_broken_source_does_not_stop_syncs() -> None:
    w = world()
    w.source.batches += [[event(ADD, make_pod("web"))],
                         [event(ERROR, None, "a.yaml, document 1: unknown field 'x'")]]
    w.loop.step()
    w.loop.step()
    assert w.loop.source_errors == {"/manifests/a.yaml": "a.yaml, document 1: unknown field 'x'"}
    assert len(w.loop.pods()) == 1  # the file's earlier pods stay
    w.source.fail = True
    w.loop.step()
    assert w.log.count("sync web") == 3


def test_an_inserted_worker_is_not_made_again_by_the_sources_add() -> None:
    w = world()
    adopted = FakeWorker(make_pod("web"), w.log)
    w.loop.insert(make_pod("web"), adopted, "/manifests/a.yaml")
    w.loop.apply([event(ADD, make_pod("web"))])
    w.loop.step()
    assert w.log == ["sync web"]
    assert w.loop.worker("uid-web") is adopted


def test_removing_an_unknown_pod_is_harmless() -> None:
    w = world()
    w.source.batches.append([event(REMOVE, make_pod("ghost"))])
    w.loop.step()
    assert w.loop.pods() == [] and w.log == []


def test_new_pods_start_side_by_side_and_a_removal_waits_for_the_start() -> None:
    gate = threading.Event()
    started: list[str] = []
    log: list[str] = []

    class SlowWorker(FakeWorker):
        def sync(self, pod: pod_pb2.Pod | None = None) -> pod_pb2.PodStatus:
            if not self.synced:  # the first sync: the pod's start
                started.append(self.pod.metadata.name)
                assert gate.wait(10)
            return super().sync(pod)

    told: list[tuple[str, str]] = []

    class Listener:
        def pod_status(self, pod: pod_pb2.Pod, source: str) -> None:
            told.append((pod.metadata.name, pod.status.phase))

        def pod_stopped(self, pod: pod_pb2.Pod, source: str) -> None:
            told.append((pod.metadata.name, "stopped"))

    source = FakeSource()
    loop = PodLoop(source, lambda pod: SlowWorker(pod, log), clock=lambda: 5.0,
                   spawn=lambda task: task(), starters=2, listener=Listener())
    source.batches.append([event(ADD, make_pod("a")), event(ADD, make_pod("b"))])
    loop.step()  # returns at once: both starts run on starter threads
    deadline = time.monotonic() + 10
    while len(started) < 2:
        assert time.monotonic() < deadline, "the two starts did not run side by side"
        time.sleep(0.01)
    source.batches.append([event(REMOVE, make_pod("a"))])
    loop.step()  # a is still starting: its removal waits
    assert "terminate a" not in log
    gate.set()
    while loop.worker("uid-b") is None or loop._entries["uid-b"].starting:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The start may end while a step is between its syncs and its publishing: the
    # pod then reaches the view before its next sync. It must still be reported.
    loop._publish()
    while any(p.status.phase != "Running" for p in loop.pods()) or len(log) < 2:
        assert time.monotonic() < deadline
        loop.step()
        time.sleep(0.01)
    loop.step()
    assert "terminate a" in log
    assert [p.metadata.name for p in loop.pods()] == ["b"]
    assert ("b", "Running") in told  # a pod started on a starter thread is reported
    assert ("a", "stopped") in told
    stop = threading.Event()
    stop.set()
    loop.run(stop)  # shuts the starters down


def test_with_a_sync_period_a_running_pod_is_synced_at_most_that_often() -> None:
    now = [5.0]
    log: list[str] = []
    source = FakeSource()
    loop = PodLoop(source, lambda pod: FakeWorker(pod, log), clock=lambda: now[0],
                   sync_period=1.0)
    source.batches.append([event(ADD, make_pod("web"))])
    loop.step()
    loop.step()  # early: the loop was woken by something else
    assert log == ["sync web"]
    assert [p.status.phase for p in loop.pods()] == ["Running"]  # still listed
    now[0] += 1.0
    loop.step()
    assert log == ["sync web", "sync web"]
    source.batches.append([event(UPDATE, make_pod("web", image="busybox:2"))])
    loop.step()  # a change is synced at once, whatever the period
    assert log == ["sync web", "sync web", "sync web"]


def test_a_finished_start_wakes_the_loop_and_is_reported_before_the_period() -> None:
    woken = threading.Event()
    told: list[tuple[str, str]] = []

    class Listener:
        def pod_status(self, pod: pod_pb2.Pod, source: str) -> None:
            told.append((pod.metadata.name, pod.status.phase))

        def pod_stopped(self, pod: pod_pb2.Pod, source: str) -> None:
            pass

    log: list[str] = []
    source = FakeSource()
    loop = PodLoop(source, lambda pod: FakeWorker(pod, log), clock=lambda: 5.0,
                   starters=1, listener=Listener(), wake=woken.set, sync_period=60.0)
    source.batches.append([event(ADD, make_pod("web"))])
    loop.step()  # the start goes to the starter thread
    assert woken.wait(10), "the starter did not wake the loop"
    while loop._entries["uid-web"].starting:
        time.sleep(0.01)
    loop.step()  # not due for a sync for 60 s, yet its new status goes out now
    assert log == ["sync web"]
    assert told == [("web", "Running")]
    assert [p.status.phase for p in loop.pods()] == ["Running"]
    stop = threading.Event()
    stop.set()
    loop.run(stop)  # shuts the starter down


def test_an_unchanged_status_keeps_the_view_and_its_pods() -> None:
    status = pod_pb2.PodStatus(phase="Running")

    class Steady(FakeWorker):
        def sync(self, pod: pod_pb2.Pod | None = None) -> pod_pb2.PodStatus:
            super().sync(pod)
            return status  # as PodWorker does while nothing changes

    log: list[str] = []
    source = FakeSource([[event(ADD, make_pod("web")), event(ADD, make_pod("db"))]])
    loop = PodLoop(source, lambda pod: Steady(pod, log), clock=lambda: 5.0)
    loop.step()
    before = {p.metadata.name: p for p in loop.pods()}
    loop.step()
    assert log == ["sync web", "sync db", "sync web", "sync db"]
    assert {p.metadata.name: p for p in loop.pods()} == before
    assert all(p is before[p.metadata.name] for p in loop.pods())  # not copied again
    source.batches.append([event(UPDATE, make_pod("web", image="busybox:2"))])
    loop.step()
    web = next(p for p in loop.pods() if p.metadata.name == "web")
    assert web.spec.containers[0].image == "busybox:2" and web.status.phase == "Running"
    assert next(p for p in loop.pods() if p.metadata.name == "db") is before["db"]
