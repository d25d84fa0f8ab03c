"""Pod events: the recorders (log only; to the scheduler, coalesced and bounded) against
the fake ClusterService of the link's tests, and the events a pod worker records on
its transitions, with the worker's fakes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from agent.events import LinkRecorder, LogRecorder, container_path
from agent.pods.images import ImagePuller
from agent.pods.worker import PodWorker
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, core_pb2, pod_pb2
from tests.unit.test_agent_link import FakeCluster, Served, W, event, make_pod, wait_for
from tests.unit.test_agent_pods_images import PullingImages, Spawned
from tests.unit.test_agent_pods_worker import FakeExec, World, probe_pod, world
from tests.unit.test_agent_pods_worker import make_pod as worker_pod

__all__ = ["world"]


class EventCluster(FakeCluster):
    """The link's fake, keeping the Events recorded: each call's, and the latest of
    each name (a repeat replaces it, as the scheduler updates it). ``refuse`` holds
    messages of Events it answers with an error; ``fail`` is the status code of the
    next call."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, core_pb2.Event] = {}
        self.batches: list[tuple[str, list[core_pb2.Event]]] = []
        self.refuse: set[str] = set()
        self.fail: grpc.StatusCode | None = None

    @property
    def calls(self) -> list[core_pb2.Event]:
        return [e for _, batch in self.batches for e in batch]

    def RecordEvents(self, request: cluster_pb2.RecordEventsRequest,
                     context: grpc.ServicerContext) -> cluster_pb2.RecordEventsResponse:
        with self.lock:
            fail, self.fail = self.fail, None
            if fail is not None:
                context.abort(fail, "not now")
            self.batches.append((request.node_name, list(request.events)))
            errors = []
            for e in request.events:
                refused = e.message in self.refuse
                if not refused:
                    self.events[e.metadata.name] = e
                errors.append("refused" if refused else "")
        return cluster_pb2.RecordEventsResponse(errors=errors)


@pytest.fixture
def served_events() -> Iterator[Served]:
    s = Served(EventCluster(), 0)  # type: ignore[abstract]
    s.start()
    try:
        yield s
    finally:
        for link in s.links:
            link.close()
        s.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 50.0
        self.wall = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.wall += timedelta(seconds=seconds)


def recorder(served: Served, clock: Clock, **kw: object) -> LinkRecorder:
    channel = grpc.insecure_channel(served.address)
    stub = cluster_pb2_grpc.ClusterServiceStub(channel)
    return LinkRecorder(stub, "n1", lambda uid: not uid.startswith("static"), clock=clock,
                        wall=lambda: clock.wall, **kw)  # type: ignore[arg-type]


def running(rec: LinkRecorder) -> threading.Thread:
    thread = threading.Thread(target=rec.run, daemon=True)
    thread.start()
    return thread


def stopped(rec: LinkRecorder, thread: threading.Thread) -> None:
    rec.stop.set()
    rec.wake()
    thread.join(5)


def test_event_has_the_kubelets_shape(served_events: Served) -> None:
    fake = served_events.fake
    assert isinstance(fake, EventCluster)
    clock = Clock()
    rec = recorder(served_events, clock)
    thread = running(rec)
    try:
        rec.event(make_pod("web"), "Started", "Started container c",
                  field_path=container_path("c"))
        wait_for("the event", lambda: fake.events)
    finally:
        stopped(rec, thread)
    (node, (e,)), = fake.batches
    assert node == "n1"
    name, _, suffix = e.metadata.name.partition(".")
    assert name == "web" and len(suffix) == 16 and int(suffix, 16)
    assert e.metadata.namespace == "default"
    ref = e.involved_object
    assert (ref.kind, ref.api_version, ref.name, ref.namespace, ref.uid, ref.field_path) == (
        "Pod", "v1", "web", "default", "uid-web", "spec.containers{c}")
    assert (e.reason, e.message, e.type, e.count) == ("Started", "Started container c",
                                                      "Normal", 1)
    assert (e.source.component, e.source.host) == ("podium-agent", "n1")
    assert e.first_timestamp.ToDatetime(UTC) == clock.wall == e.last_timestamp.ToDatetime(UTC)


def test_repeats_coalesce_into_one_event_with_a_count(served_events: Served) -> None:
    fake = served_events.fake
    assert isinstance(fake, EventCluster)
    clock = Clock()
    rec = recorder(served_events, clock, window=60.0)
    pod = make_pod("web")
    first = clock.wall
    for _ in range(3):
        rec.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
        clock.tick(1)
    rec.event(pod, "Pulled", "other")  # another reason: another Event
    assert rec.pending() == 2  # queued: the three are one Event with count 3
    thread = running(rec)
    try:
        wait_for("two events", lambda: len(fake.calls) == 2)
        assert len(fake.batches) == 1  # what was queued went in one call
        backoff = next(e for e in fake.events.values() if e.reason == "BackOff")
        assert backoff.count == 3 and backoff.type == "Warning"
        assert backoff.first_timestamp.ToDatetime(UTC) == first
        assert backoff.last_timestamp.ToDatetime(UTC) == first + timedelta(seconds=2)
        clock.tick(30)  # within the window: the same Event again, its count raised
        rec.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
        wait_for("the update", lambda: len(fake.calls) == 3)
        updated = fake.calls[-1]
        assert updated.metadata.name == backoff.metadata.name and updated.count == 4
        clock.tick(61)  # after the window: a new Event
        rec.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
        wait_for("a new event", lambda: len(fake.calls) == 4)
        fresh = fake.calls[-1]
        assert fresh.count == 1 and fresh.metadata.name != backoff.metadata.name
    finally:
        stopped(rec, thread)


def test_events_of_a_burst_gather_into_one_call(served_events: Served) -> None:
    fake = served_events.fake
    assert isinstance(fake, EventCluster)
    rec = recorder(served_events, Clock(), settle=0.5)
    thread = running(rec)
    try:
        for name in ("a", "b", "c"):  # the first wakes the sender, which waits for more
            rec.event(make_pod(name), "Started", "Started container c")
        wait_for("the events", lambda: len(fake.events) == 3)
        assert len(fake.batches) == 1
    finally:
        stopped(rec, thread)


def test_a_batch_is_sent_again_after_an_outage_and_refusals_are_logged(
        served_events: Served, caplog: pytest.LogCaptureFixture) -> None:
    fake = served_events.fake
    assert isinstance(fake, EventCluster)
    rec = recorder(served_events, Clock(), retry_delay=0.05)
    pod = make_pod("web")
    for i in range(3):
        rec.event(pod, "Pulled", f"image {i}")
    fake.refuse.add("image 1")
    fake.fail = grpc.StatusCode.UNAVAILABLE  # the scheduler restarting
    thread = running(rec)
    try:
        with caplog.at_level(logging.WARNING, logger="podium.agent"):
            wait_for("the batch", lambda: fake.batches)
    finally:
        stopped(rec, thread)
    (_, batch), = fake.batches  # the failed call's events, again, in one call
    assert [e.message for e in batch] == ["image 0", "image 1", "image 2"]
    assert sorted(e.message for e in fake.events.values()) == ["image 0", "image 2"]
    assert rec.sent == 3 and rec.pending() == 0
    refused = batch[1].metadata.name
    assert any(refused in r.getMessage() and "refused" in r.getMessage()
               for r in caplog.records)


def test_a_full_queue_drops_and_counts(served_events: Served) -> None:
    rec = recorder(served_events, Clock(), capacity=2)
    pod = make_pod("web")
    for i in range(5):
        rec.event(pod, "Pulled", f"image {i}")
    rec.event(pod, "Pulled", "image 0")  # a repeat of a queued one still counts
    assert rec.pending() == 2 and rec.dropped == 3


def test_static_pods_are_only_logged(served_events: Served,
                                     caplog: pytest.LogCaptureFixture) -> None:
    rec = recorder(served_events, Clock())
    with caplog.at_level(logging.INFO, logger="podium.agent"):
        rec.event(make_pod("s", uid="static-1"), "Started", "Started container c")
        LogRecorder().event(make_pod("t"), "Failed", "Error: boom", "Warning",
                            field_path="spec.containers{c}")
    assert rec.pending() == 0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["event pod default/s: Started: Started container c",
                     "event pod default/t spec.containers{c}: Failed: Error: boom"]
    assert caplog.records[1].levelno == logging.WARNING


def test_the_link_sends_events_of_its_pods_only(served_events: Served) -> None:
    fake = served_events.fake
    assert isinstance(fake, EventCluster)
    ours = make_pod("web")
    fake.scripts.append([event(W.ADDED, ours, 3), event(W.BOOKMARK, revision=3)])
    link = served_events.link()
    link.register()
    link.start()
    assert link.source.wait_synced(10)
    link.recorder.event(ours, "Killing", "Stopping container c")
    link.recorder.event(make_pod("mine", uid="uid-static"), "Killing", "Stopping container c")
    wait_for("the event", lambda: fake.events)
    link.close()
    assert [e.involved_object.name for e in fake.calls] == ["web"]


# --- the worker's events ----------------------------------------------------------------


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []  # (field path, reason, type, msg)

    def event(self, pod: pod_pb2.Pod, reason: str, message: str, type: str = "Normal",
              *, field_path: str = "") -> None:
        self.events.append((field_path, reason, type, message))

    def reasons(self) -> list[str]:
        out = [reason for _, reason, _, _ in self.events]
        self.events.clear()
        return out


@pytest.fixture
def events(world: World) -> FakeRecorder:
    rec = FakeRecorder()
    world.deps.recorder = rec
    return rec


def test_start_crash_backoff_and_stop(world: World, events: FakeRecorder) -> None:
    worker = PodWorker(worker_pod(), world.deps)
    worker.sync()
    assert events.events == [
        ("spec.containers{app}", "Pulled", "Normal",
         'Container image "busybox" already present on machine'),
        ("spec.containers{app}", "Created", "Normal", "Created container app"),
        ("spec.containers{app}", "Started", "Normal", "Started container app")]
    events.events.clear()
    worker.sync()
    assert events.reasons() == []  # nothing changed, nothing said
    world.clock.now += 1
    world.containers.exit("u1.app.1", 3)
    worker.sync()  # the first restart: at once
    assert events.reasons() == ["Pulled", "Created", "Started"]
    world.clock.now += 1
    world.containers.exit("u1.app.2", 3)
    worker.sync()
    worker.sync()
    (path, reason, kind, message), = events.events
    assert (path, reason, kind) == ("spec.containers{app}", "BackOff", "Warning")
    assert message == "Back-off restarting failed container app in pod web_(u1)"
    events.events.clear()
    world.clock.now += 10
    worker.sync()
    assert events.reasons() == ["Pulled", "Created", "Started"]
    worker.terminate(grace=1)
    assert events.events == [("spec.containers{app}", "Killing", "Normal",
                              "Stopping container app")]


def test_create_container_error_once_per_failure(world: World, events: FakeRecorder) -> None:
    world.containers.fail_start = "exec /bin/nope: no such file"
    pod = worker_pod(initContainers=[{"name": "setup", "image": "busybox"}])
    worker = PodWorker(pod, world.deps)
    for _ in range(3):
        worker.sync()
    failed = [e for e in events.events if e[1] == "Failed"]
    assert failed == [("spec.initContainers{setup}", "Failed", "Warning",
                       "Error: exec /bin/nope: no such file")]


def test_pull_events(world: World, events: FakeRecorder) -> None:
    images, spawned = PullingImages(), Spawned()
    world.deps.images = images
    world.deps.puller = ImagePuller(images.pull, spawn=spawned)
    images.missing.add("nope:1")
    images.fail["nope:1"] = "manifest nope:1: not found"
    worker = PodWorker(worker_pod(containers=[{"name": "c", "image": "nope:1"}]),
                       world.deps)
    worker.sync()
    worker.sync()
    assert events.reasons() == ["Pulling"]
    spawned.run()
    worker.sync()
    assert events.events == [("spec.containers{c}", "Failed", "Warning",
                              'failed to pull image "nope:1": manifest nope:1: not found')]
    events.events.clear()
    world.clock.now += 1
    worker.sync()
    worker.sync()
    assert events.events == [
        ("spec.containers{c}", "BackOff", "Warning",
         'Back-off pulling image "nope:1": failed to pull image "nope:1": manifest nope:1: '
         "not found")]
    events.events.clear()
    del images.fail["nope:1"]
    world.clock.now += 10
    worker.sync()
    spawned.run()
    worker.sync()
    assert events.reasons() == ["Pulling", "Pulled", "Created", "Started"]


def test_probe_failures_are_unhealthy_and_liveness_kills(world: World,
                                                         events: FakeRecorder) -> None:
    world.deps.exec_in_container = FakeExec({"check": 1})
    pod = probe_pod(livenessProbe={"exec": {"command": ["check"]}, "failureThreshold": 2,
                                   "periodSeconds": 5})
    worker = PodWorker(pod, world.deps)
    worker.sync()
    events.events.clear()
    worker.sync()
    assert events.events == [("spec.containers{app}", "Unhealthy", "Warning",
                              "Liveness probe failed: command ['check'] exited with 1")]
    events.events.clear()
    world.clock.now += 5
    worker.sync()
    assert [r for _, r, _, _ in events.events] == ["Unhealthy", "Killing"]
    assert events.events[-1][3] == "Container app failed liveness probe, will be restarted"


def test_an_invalid_pod_is_one_failed_event(world: World, events: FakeRecorder) -> None:
    pod = worker_pod(containers=[{"name": "a", "image": "busybox"},
                                 {"name": "a", "image": "busybox"}])
    worker = PodWorker(pod, world.deps)
    worker.sync()
    worker.sync()
    (path, reason, kind, message), = events.events
    assert (path, reason, kind) == ("", "Failed", "Warning") and message.startswith("Error: ")
