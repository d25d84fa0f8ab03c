"""The agent's link to the scheduler, against a fake ClusterService on loopback:
registration, heartbeats, re-registration, WatchPods as a pod source (list, watch,
relist, deletions), pod status published and coalesced, reconnection."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from agent.link import SCHEDULER_SOURCE, STATUS_SENDERS, SchedulerLink, stopped_status
from agent.podloop import PodLoop
from agent.retry import Backoff
from agent.sources import CombinedSource, PodEvent, PodEventType
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, node_pb2, pod_pb2

ADD, UPDATE, REMOVE = PodEventType.ADD, PodEventType.UPDATE, PodEventType.REMOVE
W = cluster_pb2.WatchEvent


def make_pod(name: str, image: str = "busybox", uid: str = "") -> pod_pb2.Pod:
    doc = {"metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}",
                        "resourceVersion": "1"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": image}]}}
    return json_format.ParseDict(doc, pod_pb2.Pod())


def event(kind: int, pod: pod_pb2.Pod | None = None, revision: int = 0,
          **extra: object) -> cluster_pb2.WatchEvent:
    out = cluster_pb2.WatchEvent(type=kind, revision=revision, **extra)  # type: ignore[arg-type]
    if pod is not None:
        out.object.pod.CopyFrom(pod)
    return out


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- the fake scheduler ---------------------------------------------------------------

class FakeCluster(cluster_pb2_grpc.ClusterServiceServicer):
    """Records what the agent calls; each WatchPods call plays the next script, then
    whatever the test pushes (None ends the stream)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodes: dict[str, node_pb2.Node] = {}
        self.registrations: list[cluster_pb2.RegisterNodeRequest] = []
        self.heartbeats: list[cluster_pb2.HeartbeatRequest] = []
        self.watches: list[cluster_pb2.WatchPodsRequest] = []
        self.statuses: list[cluster_pb2.UpdatePodStatusRequest] = []
        self.batches: list[list[str]] = []  # the pods of each UpdatePodStatuses call
        self.status_started = threading.Event()
        self.gate = threading.Event()  # status calls wait while it is clear...
        self.gate.set()
        self.held: set[str] = set()  # ...those for these pods only, if any are named
        self.scripts: list[list[cluster_pb2.WatchEvent]] = []
        self.pushed: queue.Queue[cluster_pb2.WatchEvent | None] = queue.Queue()
        self.interval = 0.05

    def RegisterNode(self, request: cluster_pb2.RegisterNodeRequest,
                     context: grpc.ServicerContext) -> cluster_pb2.RegisterNodeResponse:
        with self.lock:
            self.registrations.append(request)
            node = node_pb2.Node()
            node.CopyFrom(request.node)
            node.spec.pod_cidr = node.spec.pod_cidr or "10.88.7.0/24"
            self.nodes[node.metadata.name] = node
        return cluster_pb2.RegisterNodeResponse(node=node, heartbeat_interval=self._interval())

    def Heartbeat(self, request: cluster_pb2.HeartbeatRequest,
                  context: grpc.ServicerContext) -> cluster_pb2.HeartbeatResponse:
        with self.lock:
            self.heartbeats.append(request)
            known = request.node_name in self.nodes
        if not known:
            context.abort(grpc.StatusCode.NOT_FOUND, f"node {request.node_name} not found")
        return cluster_pb2.HeartbeatResponse(heartbeat_interval=self._interval())

    def WatchPods(self, request: cluster_pb2.WatchPodsRequest,
                  context: grpc.ServicerContext) -> Iterator[cluster_pb2.WatchEvent]:
        with self.lock:
            self.watches.append(request)
            script = self.scripts.pop(0) if self.scripts else []
        yield from script
        while context.is_active():
            try:
                item = self.pushed.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None:
                return
            yield item

    def UpdatePodStatus(self, request: cluster_pb2.UpdatePodStatusRequest,
                        context: grpc.ServicerContext) -> pod_pb2.Pod:
        self.status_started.set()
        if not self.held or request.name in self.held:
            self.gate.wait(10)
        with self.lock:
            self.statuses.append(request)
        return pod_pb2.Pod(status=request.status)

    def UpdatePodStatuses(self, request: cluster_pb2.UpdatePodStatusesRequest,
                          context: grpc.ServicerContext) -> cluster_pb2.UpdatePodStatusesResponse:
        with self.lock:
            self.batches.append([one.name for one in request.statuses])
        for one in request.statuses:
            self.UpdatePodStatus(one, context)
        return cluster_pb2.UpdatePodStatusesResponse(errors=[""] * len(request.statuses))

    def _interval(self) -> Duration:
        d = Duration()
        d.FromNanoseconds(int(self.interval * 1e9))
        return d


@dataclass
class Served:
    fake: FakeCluster
    port: int
    server: grpc.Server | None = None
    links: list[SchedulerLink] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(self.fake, self.server)
        port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert port, f"could not listen on 127.0.0.1:{self.port} again"
        self.port = port
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.fake.pushed.put(None)  # ends a stream waiting in the fake
            self.server.stop(grace=None).wait()
            self.server = None
            while not self.fake.pushed.empty():
                self.fake.pushed.get()

    def link(self, pod_cidr: str = "", status: node_pb2.NodeStatus | None = None,
             **kw: object) -> SchedulerLink:
        current = status or node_status_with("True")

        def status_fn(previous: node_pb2.NodeStatus | None) -> node_pb2.NodeStatus:
            return current

        made = SchedulerLink(self.address, "n1", status_fn, pod_cidr=pod_cidr,
                             **kw)  # type: ignore[arg-type]
        self.links.append(made)
        return made


def node_status_with(memory_pressure: str) -> node_pb2.NodeStatus:
    s = node_pb2.NodeStatus()
    s.capacity.update(cpu="2", memory="4Gi", pods="110")
    s.conditions.add(type="Ready", status="True")
    s.conditions.add(type="MemoryPressure", status=memory_pressure)
    return s


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served(FakeCluster(), 0)
    s.start()
    try:
        yield s
    finally:
        for link in s.links:
            link.close()
        s.stop()


def listed(link: SchedulerLink, *events: cluster_pb2.WatchEvent) -> list[PodEvent]:
    """Start the link on a first list of ``events`` and return what poll() gives."""
    link.register()
    link.start()
    assert link.source.wait_synced(10)
    return link.source.poll()


def kinds(events: list[PodEvent]) -> list[tuple[PodEventType, str]]:
    return [(e.type, e.pod.metadata.name if e.pod is not None else "") for e in events]


# --- registration and heartbeats ------------------------------------------------------

def test_register_takes_the_assigned_pod_cidr(served: Served) -> None:
    link = served.link()
    node = link.register()
    assert node.spec.pod_cidr == "10.88.7.0/24" and link.pod_cidr == "10.88.7.0/24"
    sent = served.fake.registrations[0].node
    assert sent.metadata.name == "n1" and sent.spec.pod_cidr == ""
    assert sent.status.capacity["cpu"] == "2"
    assert link.interval == pytest.approx(0.05)


def test_register_asks_for_a_given_pod_cidr(served: Served) -> None:
    link = served.link(pod_cidr="10.88.42.0/24")
    assert link.register().spec.pod_cidr == "10.88.42.0/24"
    assert served.fake.registrations[0].node.spec.pod_cidr == "10.88.42.0/24"


def test_register_waits_for_the_scheduler(served: Served) -> None:
    served.stop()
    link = served.link()
    result: list[node_pb2.Node] = []
    thread = threading.Thread(target=lambda: result.append(link.register()))
    thread.start()
    time.sleep(0.3)
    assert not result
    served.start()
    thread.join(timeout=15)
    assert result and result[0].spec.pod_cidr == "10.88.7.0/24"


def test_heartbeats_renew_the_lease_and_carry_status_when_it_changes(served: Served) -> None:
    now = [0.0]
    current = [node_status_with("False")]
    link = SchedulerLink(served.address, "n1", lambda previous: current[0],
                         clock=lambda: now[0], full_status_every=10.0)
    served.links.append(link)
    link.register()
    link.heartbeat()
    assert not served.fake.heartbeats[-1].HasField("status")  # just registered
    current[0] = node_status_with("True")  # a condition changed: the status goes along
    link.heartbeat()
    assert served.fake.heartbeats[-1].status.conditions[1].status == "True"
    link.heartbeat()
    assert not served.fake.heartbeats[-1].HasField("status")
    now[0] = 10.0  # every full_status_every seconds in any case
    link.heartbeat()
    assert served.fake.heartbeats[-1].HasField("status")
    assert served.fake.heartbeats[-1].node_name == "n1"


def test_heartbeat_thread_beats_at_the_scheduler_interval(served: Served) -> None:
    link = served.link()
    link.register()
    link.start()
    wait_for("five heartbeats", lambda: len(served.fake.heartbeats) >= 5)


def test_not_found_registers_again_with_the_cidr_in_use(served: Served) -> None:
    link = served.link()
    link.register()
    link.start()
    with served.fake.lock:
        served.fake.nodes.clear()  # the scheduler forgot the node
    wait_for("a second registration", lambda: len(served.fake.registrations) >= 2)
    assert served.fake.registrations[1].node.spec.pod_cidr == "10.88.7.0/24"
    count = len(served.fake.heartbeats)
    wait_for("heartbeats again", lambda: len(served.fake.heartbeats) > count + 2)


# --- pods -----------------------------------------------------------------------------

def test_list_then_watch_become_pod_events(served: Served) -> None:
    a, b = make_pod("a"), make_pod("b")
    served.fake.scripts.append([event(W.ADDED, a, 5), event(W.ADDED, b, 5),
                                event(W.BOOKMARK, revision=5)])
    link = served.link()
    assert not link.source.synced
    events = listed(link)
    assert kinds(events) == [(ADD, "a"), (ADD, "b")]
    assert all(e.source == SCHEDULER_SOURCE for e in events)
    assert not events[0].pod.HasField("status")  # type: ignore[union-attr]
    assert link.source.synced and served.fake.watches[0].from_revision == 0
    assert served.fake.watches[0].node_name == "n1"

    changed = make_pod("a", image="busybox:1.36")
    served.fake.pushed.put(event(W.MODIFIED, changed, 6))
    reported = make_pod("a", image="busybox:1.36")  # only status and version differ
    reported.status.phase = "Running"
    reported.metadata.resource_version = "7"
    served.fake.pushed.put(event(W.MODIFIED, reported, 7))
    served.fake.pushed.put(event(W.DELETED, b, 8))
    got: list[PodEvent] = []
    wait_for("three changes", lambda: got.extend(link.source.poll()) or link.source.revision == 8)
    assert kinds(got) == [(UPDATE, "a"), (REMOVE, "b")]
    assert got[0].pod is not None and got[0].pod.spec.containers[0].image == "busybox:1.36"


def test_relist_stops_pods_no_longer_listed(served: Served) -> None:
    a, b = make_pod("a"), make_pod("b")
    served.fake.scripts += [
        [event(W.ADDED, a, 5), event(W.ADDED, b, 5), event(W.BOOKMARK, revision=5),
         event(W.ERROR, message="too far behind", relist=True)],
        [event(W.ADDED, a, 9), event(W.BOOKMARK, revision=9)]]
    link = served.link()
    events = listed(link)
    wait_for("a second watch", lambda: len(served.fake.watches) >= 2)
    assert served.fake.watches[1].from_revision == 0
    wait_for("the relist's end", lambda: link.source.revision == 9)
    events = link.source.poll()
    # a is unchanged (same uid, same spec): no event, no restart; b was re-placed.
    assert kinds(events) == [(REMOVE, "b")]


def test_a_list_broken_midway_is_listed_again(served: Served) -> None:
    a = make_pod("a")
    served.fake.scripts += [[event(W.ADDED, a, 5)],
                            [event(W.ADDED, a, 5), event(W.BOOKMARK, revision=5)]]
    link = served.link()
    link.register()
    link.start()
    wait_for("the first watch", lambda: served.fake.watches)
    served.fake.pushed.put(None)  # the stream ends before the list's BOOKMARK
    assert link.source.wait_synced(10)
    assert [w.from_revision for w in served.fake.watches] == [0, 0]
    assert kinds(link.source.poll()) == [(ADD, "a")]


def test_reconnect_resumes_from_the_last_revision(served: Served) -> None:
    a = make_pod("a")
    served.fake.scripts.append([event(W.ADDED, a, 3), event(W.BOOKMARK, revision=3)])
    link = served.link()
    assert kinds(listed(link)) == [(ADD, "a")]
    served.fake.pushed.put(event(W.BOOKMARK, revision=9))
    wait_for("revision 9", lambda: link.source.revision == 9)
    served.stop()
    time.sleep(0.5)  # the scheduler away: nothing happens to the pods
    assert link.source.poll() == []
    served.start()  # the same port
    wait_for("a watch resumed", lambda: len(served.fake.watches) >= 2)
    assert served.fake.watches[-1].from_revision == 9
    served.fake.pushed.put(event(W.MODIFIED, a, 10))  # unchanged: nothing to do
    wait_for("revision 10", lambda: link.source.revision == 10)
    assert link.source.poll() == []


def test_backoff_doubles_to_five_seconds() -> None:
    b = Backoff()
    assert [b.next() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    b.reset()
    assert b.next() == 0.2


# --- with the pod loop: deletion and status ------------------------------------------

@dataclass
class FakeWorker:
    pod: pod_pb2.Pod
    phase: str = "Running"
    terminated: list[float | None] = field(default_factory=list)

    def sync(self, pod: pod_pb2.Pod | None = None) -> pod_pb2.PodStatus:
        status = pod_pb2.PodStatus(phase=self.phase)
        status.container_statuses.add(name="c").state.running.SetInParent()
        return status

    def terminate(self, grace: float | None = None) -> pod_pb2.PodStatus:
        self.terminated.append(grace)
        status = pod_pb2.PodStatus(phase="Failed")
        status.container_statuses.add(name="c").state.terminated.exit_code = 143
        return status


def loop_on(link: SchedulerLink, workers: dict[str, FakeWorker]) -> PodLoop:
    def make(pod: pod_pb2.Pod) -> FakeWorker:
        workers[pod.metadata.name] = FakeWorker(pod)
        return workers[pod.metadata.name]

    return PodLoop(link.source, make, listener=link)


def test_status_changes_are_sent(served: Served) -> None:
    served.fake.scripts.append([event(W.ADDED, make_pod("a"), 3), event(W.BOOKMARK, revision=3)])
    link = served.link()
    workers: dict[str, FakeWorker] = {}
    loop = loop_on(link, workers)
    link.register()
    link.start()
    assert link.source.wait_synced(10)
    loop.step()
    wait_for("a status", lambda: served.fake.statuses)
    sent = served.fake.statuses[0]
    assert (sent.node_name, sent.namespace, sent.name, sent.uid) == ("n1", "default", "a",
                                                                     "uid-a")
    assert sent.status.phase == "Running"
    loop.step()
    loop.step()  # the same status: not sent again
    workers["a"].phase = "Succeeded"
    loop.step()
    wait_for("a second status", lambda: len(served.fake.statuses) >= 2)
    time.sleep(0.2)
    assert [s.status.phase for s in served.fake.statuses] == ["Running", "Succeeded"]


def test_deletion_stops_the_pod_with_its_grace_then_reports_it(served: Served) -> None:
    a = make_pod("a")
    served.fake.scripts.append([event(W.ADDED, a, 3), event(W.BOOKMARK, revision=3)])
    link = served.link()
    workers: dict[str, FakeWorker] = {}
    loop = loop_on(link, workers)
    link.register()
    link.start()
    assert link.source.wait_synced(10)
    loop.step()
    wait_for("the running status", lambda: served.fake.statuses)
    deleting = make_pod("a")
    deleting.metadata.deletion_timestamp.GetCurrentTime()
    deleting.metadata.deletion_grace_period_seconds = 7
    served.fake.pushed.put(event(W.MODIFIED, deleting, 4))
    wait_for("the deletion", lambda: link.source.revision == 4)
    loop.step()
    assert workers["a"].terminated == [7.0]
    wait_for("the final status", lambda: len(served.fake.statuses) >= 2)
    final = served.fake.statuses[-1].status
    assert final.phase == "Failed"
    assert final.container_statuses[0].state.terminated.exit_code == 143
    loop.step()
    assert all(p.metadata.name != "a" for p in loop.pods())
    # The scheduler's later word on the deleting pod is not acted on twice.
    served.fake.pushed.put(event(W.MODIFIED, deleting, 5))
    wait_for("revision 5", lambda: link.source.revision == 5)
    assert link.source.poll() == []


def test_a_pod_first_seen_deleting_is_reported_stopped(served: Served) -> None:
    deleting = make_pod("gone")
    deleting.metadata.deletion_timestamp.GetCurrentTime()
    served.fake.scripts.append([event(W.ADDED, deleting, 3), event(W.BOOKMARK, revision=3)])
    link = served.link()
    workers: dict[str, FakeWorker] = {}
    loop = loop_on(link, workers)
    link.register()
    link.start()
    assert link.source.wait_synced(10)
    loop.step()
    assert workers == {}  # nothing was started for it
    wait_for("the stopped status", lambda: served.fake.statuses)
    assert served.fake.statuses[0].name == "gone"
    assert served.fake.statuses[0].status.phase == "Failed"


def test_statuses_are_coalesced_one_call_per_pod_in_flight(served: Served) -> None:
    link = served.link()
    link.register()
    link.start()
    served.fake.gate.clear()
    pod = make_pod("a")
    for phase in ("Pending", "Running", "Succeeded", "Failed"):
        pod.status.phase = phase
        link.pod_status(pod, SCHEDULER_SOURCE)
        if phase == "Pending":
            assert served.fake.status_started.wait(10)  # held by the fake
    static = make_pod("static-web")
    link.pod_status(static, "/etc/podium/manifests/web.yaml")  # no mirror pods
    served.fake.gate.set()
    wait_for("two statuses", lambda: len(served.fake.statuses) >= 2)
    time.sleep(0.3)
    assert [s.status.phase for s in served.fake.statuses] == ["Pending", "Failed"]


def test_statuses_waiting_together_go_in_one_call(served: Served) -> None:
    link = served.link()
    link.register()
    link.start()
    served.fake.gate.clear()
    for i in range(STATUS_SENDERS):  # every sender's call in flight, held by the fake
        link.pod_status(make_pod(f"busy{i}"), SCHEDULER_SOURCE)
        wait_for(f"sender {i} busy", lambda n=i + 1: len(served.fake.batches) == n)
    for i in range(6):
        link.pod_status(make_pod(f"p{i}"), SCHEDULER_SOURCE)
    served.fake.gate.set()
    wait_for("every status", lambda: len(served.fake.statuses) == STATUS_SENDERS + 6)
    assert [f"p{i}" for i in range(6)] in served.fake.batches  # one call, oldest first


def test_a_slow_status_call_holds_up_no_other_pod(served: Served) -> None:
    link = served.link()
    link.register()
    link.start()
    served.fake.held = {"slow"}
    served.fake.gate.clear()
    slow, fast = make_pod("slow"), make_pod("fast")
    link.pod_status(slow, SCHEDULER_SOURCE)
    assert served.fake.status_started.wait(10)  # its call is in flight, held by the fake
    slow.status.phase = "Running"
    link.pod_status(slow, SCHEDULER_SOURCE)  # waits for the pod's own call, not a sender
    link.pod_status(fast, SCHEDULER_SOURCE)
    wait_for("the other pod's status", lambda: served.fake.statuses)
    assert [s.name for s in served.fake.statuses] == ["fast"]
    served.fake.gate.set()
    wait_for("both of the slow pod's", lambda: len(served.fake.statuses) >= 3)
    time.sleep(0.3)
    assert [(s.name, s.status.phase) for s in served.fake.statuses] == [
        ("fast", ""), ("slow", ""), ("slow", "Running")]


def test_statuses_wait_for_the_scheduler_to_return(served: Served) -> None:
    link = served.link()
    link.register()
    link.start()
    served.stop()
    pod = make_pod("a")
    for phase in ("Pending", "Running"):
        pod.status.phase = phase
        link.pod_status(pod, SCHEDULER_SOURCE)
    time.sleep(0.5)
    served.start()
    wait_for("the status", lambda: served.fake.statuses)
    time.sleep(0.3)
    assert [s.status.phase for s in served.fake.statuses] == ["Running"]


def test_stopped_status_terminates_every_container() -> None:
    status = pod_pb2.PodStatus(phase="Running")
    status.container_statuses.add(name="c", ready=True).state.running.SetInParent()
    status.conditions.add(type="Ready", status="True")
    out = stopped_status(status)
    assert out.phase == "Failed"
    cs = out.container_statuses[0]
    assert cs.state.terminated.reason == "ContainerStatusUnknown" and not cs.ready
    assert out.conditions[0].status == "False"
    assert stopped_status(pod_pb2.PodStatus(phase="Succeeded")).phase == "Succeeded"


def test_combined_source_keeps_one_sources_events_when_another_fails() -> None:
    class Broken:
        def poll(self) -> list[PodEvent]:
            raise OSError("gone")

    class One:
        def poll(self) -> list[PodEvent]:
            return [PodEvent(ADD, make_pod("a"), "x")]

    assert kinds(CombinedSource(Broken(), One()).poll()) == [(ADD, "a")]


# --- the agent's wiring -----------------------------------------------------------------

def test_agent_takes_its_pod_cidr_from_registration(served: Served, tmp_path: Path) -> None:
    from agent.daemon import Agent, AgentConfig

    agent = Agent(AgentConfig(scheduler=served.address, pod_cidr=None, node_name="n1",
                              root=tmp_path, listen="127.0.0.1:7401",
                              node_ip="198.51.100.4"))
    agent._connect()
    try:
        assert str(agent.pod_cidr) == "10.88.7.0/24"
        sent = served.fake.registrations[0].node
        assert sent.spec.pod_cidr == ""
        assert sent.status.daemon_endpoints.agent_endpoint.port == 7401
        assert ("InternalIP", "198.51.100.4") in [(a.type, a.address)
                                                  for a in sent.status.addresses]
        assert sent.status.node_info.podium_version
    finally:
        assert agent.link is not None
        agent.link.close()


def test_agent_asks_for_a_given_pod_cidr(served: Served, tmp_path: Path) -> None:
    from ipaddress import IPv4Network

    from agent.daemon import Agent, AgentConfig

    agent = Agent(AgentConfig(scheduler=served.address, pod_cidr=IPv4Network("10.88.9.0/24"),
                              node_name="n1", root=tmp_path))
    agent._connect()
    try:
        assert served.fake.registrations[0].node.spec.pod_cidr == "10.88.9.0/24"
        assert str(agent.pod_cidr) == "10.88.9.0/24"
    finally:
        assert agent.link is not None
        agent.link.close()
