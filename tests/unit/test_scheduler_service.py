"""ClusterService over real gRPC on loopback, with the in-memory store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto.podium.v1 import apps_pb2, cluster_pb2, cluster_pb2_grpc, pod_pb2, service_pb2
from scheduler.objects import wrap
from scheduler.server import Scheduler
from scheduler.store.sqlite import SqliteStore
from tests.support.cluster import HollowNode, client, node_message, running_scheduler

Stub = cluster_pb2_grpc.ClusterServiceStub


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    with running_scheduler(node_grace=0.6, eviction_timeout=0.4,
                           heartbeat_interval=0.2) as s:
        yield s


@pytest.fixture
def stub(scheduler: Scheduler) -> Iterator[Stub]:
    with client(scheduler.port) as s:
        yield s


def pod(name: str, labels: dict[str, str] | None = None, cpu: str = "") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.labels.update(labels or {})
    c = p.spec.containers.add(name="main", image="busybox:1.36", command=["sleep", "3600"])
    if cpu:
        c.resources.requests["cpu"] = cpu
    return p


def deployment(name: str, replicas: int, image: str = "busybox:1.36") -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name = name
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.containers.add(name="main", image=image)
    return d


def create(stub: Stub, message: object) -> cluster_pb2.Object:
    return stub.Create(cluster_pb2.CreateRequest(object=wrap(message))).object  # type: ignore[arg-type]


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def wait_for(what: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def pods(stub: Stub, selector: str = "") -> list[pod_pb2.Pod]:
    items = stub.List(cluster_pb2.ListRequest(kind="Pod", label_selector=selector)).items
    return [i.pod for i in items]


def test_create_sets_identity_defaults_and_version(stub: Stub) -> None:
    stored = create(stub, pod("web")).pod
    assert stored.metadata.uid and stored.metadata.resource_version
    assert stored.metadata.namespace == "default"
    assert stored.metadata.HasField("creation_timestamp")
    assert stored.spec.restart_policy == "Always"
    assert stored.status.phase == "Pending"
    got = stub.Get(cluster_pb2.GetRequest(kind="Pod", name="web")).pod
    assert (got.metadata.uid, got.spec) == (stored.metadata.uid, stored.spec)


def test_errors_are_status_codes_naming_what(stub: Stub) -> None:
    create(stub, pod("web"))
    code, _ = code_of(lambda: create(stub, pod("web")))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, details = code_of(lambda: create(stub, pod("Bad_Name")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metadata.name" in details
    code, _ = code_of(lambda: stub.Get(cluster_pb2.GetRequest(kind="Pod", name="nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = code_of(lambda: stub.Get(cluster_pb2.GetRequest(kind="Pot", name="x")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Pot" in details
    elsewhere = pod("lost")
    elsewhere.metadata.namespace = "nowhere"
    code, details = code_of(lambda: create(stub, elsewhere))
    assert code == grpc.StatusCode.NOT_FOUND and "nowhere" in details
    assert [p.metadata.name for p in pods(stub)] == ["web"]


def test_update_needs_the_version_read(stub: Stub) -> None:
    # A Service: no controller writes to it meanwhile.
    svc = service_pb2.Service()
    svc.metadata.name = "web"
    svc.spec.selector["app"] = "web"
    svc.spec.ports.add(port=80)
    stored = create(stub, svc).service
    stored.spec.ports[0].port = 8080
    updated = stub.Update(cluster_pb2.UpdateRequest(object=wrap(stored))).object.service
    assert updated.metadata.generation == 2 and updated.spec.ports[0].port == 8080
    stored.spec.ports[0].port = 8081  # still the old version
    code, _ = code_of(lambda: stub.Update(cluster_pb2.UpdateRequest(object=wrap(stored))))
    assert code == grpc.StatusCode.ABORTED
    stored.metadata.resource_version = ""
    code, details = code_of(lambda: stub.Update(cluster_pb2.UpdateRequest(object=wrap(stored))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "resourceVersion" in details


def test_apply_creates_then_is_idempotent_then_configures(stub: Stub) -> None:
    def apply(d: apps_pb2.Deployment) -> str:
        return stub.Apply(cluster_pb2.ApplyRequest(object=wrap(d))).action

    assert apply(deployment("web", 0)) == "created"
    assert apply(deployment("web", 0)) == "unchanged"
    assert apply(deployment("web", 0, image="busybox:1.37")) == "configured"


def test_list_filters_by_labels_and_fields(stub: Stub) -> None:
    create(stub, pod("a", {"app": "web", "tier": "front"}))
    create(stub, pod("b", {"app": "web"}))
    create(stub, pod("c", {"app": "db"}))
    assert [p.metadata.name for p in pods(stub, "app=web,tier!=front")] == ["b"]
    assert [p.metadata.name for p in pods(stub, "app in (db)")] == ["c"]
    items = stub.List(cluster_pb2.ListRequest(kind="Pod", field_selector="metadata.name=a"))
    assert [i.pod.metadata.name for i in items.items] == ["a"]
    code, _ = code_of(lambda: stub.List(cluster_pb2.ListRequest(kind="Pod",
                                                               label_selector="app in (")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_watch_lists_then_follows_and_resumes(stub: Stub) -> None:
    create(stub, pod("a", {"app": "web"}))
    call = stub.Watch(cluster_pb2.WatchRequest(kind="Pod", label_selector="app=web"))
    events = iter(call)
    first = next(events)
    assert first.type == first.ADDED and first.object.pod.metadata.name == "a"
    assert next(events).type == first.BOOKMARK
    create(stub, pod("other", {"app": "db"}))  # not shown: does not match
    create(stub, pod("b", {"app": "web"}))
    added = next(e for e in events if e.type != e.MODIFIED)  # placement writes status
    assert added.type == added.ADDED and added.object.pod.metadata.name == "b"
    # Placement writes the pod's status meanwhile (and may again, as it retries the
    # unplaceable pod): read, change, update, and read again on a conflict, as a
    # client does.
    for _ in range(20):
        b = stub.Get(cluster_pb2.GetRequest(kind="Pod", name="b"))
        b.pod.metadata.labels["app"] = "db"  # leaves the view: DELETED for this watcher
        try:
            stub.Update(cluster_pb2.UpdateRequest(object=b))
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ABORTED:
                raise
    else:
        raise AssertionError("pod b: every update met a newer write")
    left = next(e for e in events if e.type != e.MODIFIED)  # status writes come too
    assert left.type == left.DELETED and left.object.pod.metadata.name == "b"
    call.cancel()
    # Resume from the last revision seen: only what came after.
    stub.Delete(cluster_pb2.DeleteRequest(kind="Pod", name="a"))
    resumed = iter(stub.Watch(cluster_pb2.WatchRequest(kind="Pod", label_selector="",
                                                       from_revision=left.revision)))
    gone = next(e for e in resumed if e.type != e.MODIFIED)
    assert gone.type == gone.DELETED and gone.object.pod.metadata.name == "a"
    assert gone.revision > left.revision


def test_watch_refuses_a_negative_revision(stub: Stub) -> None:
    code, details = code_of(lambda: list(stub.Watch(cluster_pb2.WatchRequest(
        kind="Pod", from_revision=-5))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "fromRevision" in details


def test_register_assigns_distinct_pod_cidrs(stub: Stub) -> None:
    a = stub.RegisterNode(cluster_pb2.RegisterNodeRequest(node=node_message("n1"))).node
    b = stub.RegisterNode(cluster_pb2.RegisterNodeRequest(node=node_message("n2"))).node
    assert a.spec.pod_cidr != b.spec.pod_cidr
    assert a.spec.pod_cidr.startswith("10.88.") and a.spec.pod_cidr.endswith("/24")
    again = stub.RegisterNode(cluster_pb2.RegisterNodeRequest(node=node_message("n1")))
    assert again.node.spec.pod_cidr == a.spec.pod_cidr
    # The agent learns the networks it must not masquerade and must proxy.
    assert (again.cluster_cidr, again.service_cidr) == ("10.88.0.0/16", "10.96.0.0/16")
    asked = node_message("n3")
    asked.spec.pod_cidr = a.spec.pod_cidr
    code, details = code_of(lambda: stub.RegisterNode(
        cluster_pb2.RegisterNodeRequest(node=asked)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "overlaps" in details
    code, _ = code_of(lambda: stub.Heartbeat(cluster_pb2.HeartbeatRequest(node_name="ghost")))
    assert code == grpc.StatusCode.NOT_FOUND


def test_pods_are_placed_run_and_deleted_gracefully(stub: Stub) -> None:
    node = HollowNode(stub, "n1")
    try:
        create(stub, pod("web"))
        wait_for(lambda: pods(stub)[0].status.phase == "Running")
        placed = pods(stub)[0]
        assert placed.spec.node_name == "n1"
        assert any(c.type == "PodScheduled" and c.status == "True"
                   for c in placed.status.conditions)
        # Another node may not report on it.
        code, _ = code_of(lambda: stub.UpdatePodStatus(cluster_pb2.UpdatePodStatusRequest(
            node_name="n2", name="web", uid=placed.metadata.uid, status=placed.status)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        going = stub.Delete(cluster_pb2.DeleteRequest(kind="Pod", name="web")).pod
        assert going.metadata.HasField("deletion_timestamp")
        wait_for(lambda: not pods(stub))  # gone once the node reported it stopped
    finally:
        node.close()


def test_unschedulable_pod_says_why_and_waits(stub: Stub) -> None:
    node = HollowNode(stub, "small", cpu="1")
    try:
        create(stub, pod("big", cpu="2"))
        wait_for(lambda: any(c.reason == "Unschedulable" for c in pods(stub)[0].status.conditions))
        condition = next(c for c in pods(stub)[0].status.conditions if c.type == "PodScheduled")
        assert condition.message.startswith("0/1 nodes are available: 1 Insufficient cpu")
        events = stub.List(cluster_pb2.ListRequest(kind="Event")).items
        assert any(e.event.reason == "FailedScheduling" for e in events)
        roomy = HollowNode(stub, "roomy", cpu="4")
        try:
            wait_for(lambda: pods(stub)[0].spec.node_name == "roomy")
        finally:
            roomy.close()
    finally:
        node.close()


def test_deployment_spreads_and_scales(stub: Stub) -> None:
    nodes = [HollowNode(stub, f"n{i}") for i in range(3)]
    try:
        create(stub, deployment("web", 6))

        def spread() -> list[int]:
            running = [p for p in pods(stub, "app=web") if p.status.phase == "Running"]
            return sorted(sum(p.spec.node_name == n.name for p in running) for n in nodes)

        wait_for(lambda: spread() == [2, 2, 2])
        stub.Scale(cluster_pb2.ScaleRequest(kind="Deployment", name="web", replicas=2))
        wait_for(lambda: len(pods(stub, "app=web")) == 2)
        code, _ = code_of(lambda: stub.Scale(cluster_pb2.ScaleRequest(
            kind="Deployment", name="web", replicas=-1)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        for node in nodes:
            node.close()


def test_lost_node_goes_not_ready_and_its_pods_move(stub: Stub) -> None:
    nodes = [HollowNode(stub, f"n{i}") for i in range(2)]
    try:
        create(stub, deployment("web", 2))
        wait_for(lambda: len({p.spec.node_name for p in pods(stub, "app=web")
                              if p.status.phase == "Running"}) == 2)
        nodes[0].close()  # n0 dies
        wait_for(lambda: all(p.spec.node_name == "n1" and p.status.phase == "Running"
                             for p in pods(stub, "app=web"))
                 and len(pods(stub, "app=web")) == 2)
        n0 = stub.Get(cluster_pb2.GetRequest(kind="Node", name="n0")).node
        ready = next(c for c in n0.status.conditions if c.type == "Ready")
        assert ready.status == "Unknown"
    finally:
        for node in nodes:
            node.close()


def test_health_is_serving(scheduler: Scheduler) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{scheduler.port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service="podium.v1.ClusterService"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def test_a_client_leaving_mid_watch_costs_nothing(scheduler: Scheduler, stub: Stub) -> None:
    store = scheduler.store
    assert isinstance(store, SqliteStore)

    def settled() -> bool:  # the scheduler's own loops have opened their watches
        first = store.watch_count
        time.sleep(0.3)
        return first == store.watch_count

    wait_for(settled)
    before = store.watch_count
    calls = []
    for _ in range(10):
        call = stub.Watch(cluster_pb2.WatchRequest(kind="Pod"))
        next(iter(call))
        calls.append(call)
    assert store.watch_count >= before + 9  # the loops' own watches come and go
    for call in calls:
        call.cancel()
    wait_for(lambda: store.watch_count <= before)


def test_a_namespace_takes_its_objects_with_it(stub: Stub) -> None:
    ns = cluster_pb2.Object()
    ns.namespace.metadata.name = "team"
    stub.Create(cluster_pb2.CreateRequest(object=ns))
    p = pod("web")
    p.metadata.namespace = "team"
    create(stub, p)
    stub.Delete(cluster_pb2.DeleteRequest(kind="Namespace", name="team"))
    assert not stub.List(cluster_pb2.ListRequest(kind="Pod", namespace="team")).items
    code, details = code_of(lambda: stub.Delete(cluster_pb2.DeleteRequest(
        kind="Namespace", name="default")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "default" in details


def test_an_agent_records_events_in_one_call(stub: Stub) -> None:
    from agent.events import make_event

    node = HollowNode(stub, "n1")
    try:
        about = pod_pb2.Pod()
        about.metadata.name, about.metadata.uid = "web", "uid-web"
        when = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
        started = make_event(about, "Started", "Started container c", "Normal", "", "n1", when)
        pulled = make_event(about, "Pulled", "image present", "Normal", "", "n1", when,
                            nanos=1)
        foreign = make_event(about, "Killing", "not mine", "Normal", "", "n2", when, nanos=2)
        nameless = make_event(about, "Pulled", "no name", "Normal", "", "n1", when, nanos=3)
        nameless.metadata.name = ""
        answer = stub.RecordEvents(cluster_pb2.RecordEventsRequest(
            node_name="n1", events=[started, pulled, foreign, nameless]))
        assert answer.errors[:2] == ["", ""]
        assert "source.host" in answer.errors[2] and "n2" in answer.errors[2]
        assert answer.errors[3].startswith("metadata.name")
        stored = {e.event.metadata.name: e.event for e in
                  stub.List(cluster_pb2.ListRequest(kind="Event")).items
                  if e.event.source.host == "n1"}
        assert set(stored) == {started.metadata.name, pulled.metadata.name}
        # A repeat (same name, count raised): the stored Event is updated.
        started.count = 3
        started.last_timestamp.FromDatetime(when.replace(minute=5))
        assert stub.RecordEvents(cluster_pb2.RecordEventsRequest(
            node_name="n1", events=[started])).errors == [""]
        again = stub.Get(cluster_pb2.GetRequest(kind="Event", namespace="default",
                                                name=started.metadata.name)).event
        assert again.count == 3 and again.last_timestamp.ToDatetime(UTC).minute == 5
        assert again.first_timestamp.ToDatetime(UTC) == when
        # An unknown node, and too many at once: refused whole.
        code, _ = code_of(lambda: stub.RecordEvents(cluster_pb2.RecordEventsRequest(
            node_name="nobody", events=[started])))
        assert code == grpc.StatusCode.NOT_FOUND
        code, details = code_of(lambda: stub.RecordEvents(cluster_pb2.RecordEventsRequest(
            node_name="n1", events=[pulled] * 201)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 200" in details
    finally:
        node.close()


def test_an_agent_updates_several_pod_statuses_in_one_call(stub: Stub) -> None:
    node = HollowNode(stub, "n1")
    try:
        for name in ("a", "b"):
            create(stub, pod(name))
        wait_for(lambda: all(p.status.phase == "Running" for p in pods(stub))
                 and len(pods(stub)) == 2)
        a, b = sorted(pods(stub), key=lambda p: p.metadata.name)
        done_a, done_b = pod_pb2.PodStatus(), pod_pb2.PodStatus()
        done_a.CopyFrom(a.status)
        done_b.CopyFrom(b.status)
        done_a.message, done_b.message = "reported a", "reported b"

        def request(p: pod_pb2.Pod, status: pod_pb2.PodStatus,
                    node_name: str = "n1") -> cluster_pb2.UpdatePodStatusRequest:
            return cluster_pb2.UpdatePodStatusRequest(node_name=node_name, name=p.metadata.name,
                                                      uid=p.metadata.uid, status=status)
        ghost = pod_pb2.Pod()
        ghost.metadata.name, ghost.metadata.uid = "ghost", "uid-ghost"
        answer = stub.UpdatePodStatuses(cluster_pb2.UpdatePodStatusesRequest(statuses=[
            request(a, done_a), request(b, done_b, "n2"), request(ghost, done_a)]))
        assert answer.errors[0] == ""
        assert "bound to n1, not to n2" in answer.errors[1]
        assert "ghost" in answer.errors[2] and "not found" in answer.errors[2]
        stored = {p.metadata.name: p.status.message for p in pods(stub)}
        assert stored == {"a": "reported a", "b": b.status.message}
    finally:
        node.close()
