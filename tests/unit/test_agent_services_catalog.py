"""ClusterCatalog: against the in-process scheduler (list, watch, changes, deletes,
coalescing) and against a scripted fake Watch (relist orders, broken lists,
resuming from the last revision, a scheduler that is away)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from agent.services import Catalog, ClusterCatalog
from proto.podium.v1 import cluster_pb2, cluster_pb2_grpc, service_pb2
from tests.support.cluster import client, node_message, running_scheduler

W = cluster_pb2.WatchEvent


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Heard:
    """A subscriber that keeps every snapshot it was given."""

    def __init__(self) -> None:
        self.snapshots: list[Catalog] = []
        self.lock = threading.Lock()

    def __call__(self, catalog: Catalog) -> None:
        with self.lock:
            self.snapshots.append(catalog)

    @property
    def last(self) -> Catalog:
        with self.lock:
            return self.snapshots[-1]

    def count(self) -> int:
        with self.lock:
            return len(self.snapshots)


def a_service(name: str, cluster_ip: str = "") -> service_pb2.Service:
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, "default"
    svc.spec.cluster_ip = cluster_ip
    svc.spec.ports.add(port=80)  # no selector: the scheduler keeps no Endpoints for it
    return svc


def some_endpoints(name: str, *ips: str) -> service_pb2.Endpoints:
    eps = service_pb2.Endpoints()
    eps.metadata.name, eps.metadata.namespace = name, "default"
    subset = eps.subsets.add()
    for ip in ips:
        subset.addresses.add(ip=ip)
    subset.ports.add(port=8080, protocol="TCP")
    return eps


# --- against the scheduler ----------------------------------------------------------


def test_catalog_follows_services_endpoints_and_nodes() -> None:
    stop = threading.Event()
    with running_scheduler() as scheduler, client(scheduler.port) as stub:
        stub.RegisterNode(cluster_pb2.RegisterNodeRequest(node=node_message("n1")))
        stub.Create(cluster_pb2.CreateRequest(
            object=cluster_pb2.Object(service=a_service("web"))))
        catalog = ClusterCatalog(f"127.0.0.1:{scheduler.port}", stop)
        heard = Heard()
        catalog.subscribe(heard)
        catalog.start()
        try:
            assert catalog.wait_synced(10)
            wait_for("the first snapshot", heard.count)
            first = heard.last
            assert set(first.services) == {("default", "web")}
            assert first.services["default", "web"].spec.cluster_ip.startswith("10.96.")
            assert set(first.nodes) == {"n1"}
            assert first.nodes["n1"].spec.pod_cidr
            assert first.endpoints == {}

            stub.Create(cluster_pb2.CreateRequest(
                object=cluster_pb2.Object(endpoints=some_endpoints("web", "10.88.1.5"))))
            wait_for("the endpoints", lambda: ("default", "web") in heard.last.endpoints)
            got = heard.last.endpoints["default", "web"]
            assert [a.ip for a in got.subsets[0].addresses] == ["10.88.1.5"]
            assert first.endpoints == {}  # a snapshot never changes under its reader

            stub.Delete(cluster_pb2.DeleteRequest(kind="Service", name="web"))
            wait_for("the service gone", lambda: not heard.last.services)
            assert catalog.snapshot() is heard.last
        finally:
            catalog.close()
    assert stop.is_set()


def test_a_burst_of_changes_comes_as_few_notifications() -> None:
    with running_scheduler() as scheduler, client(scheduler.port) as stub:
        catalog = ClusterCatalog(f"127.0.0.1:{scheduler.port}", threading.Event(),
                                 settle=0.3)
        heard = Heard()
        catalog.subscribe(heard)
        catalog.start()
        try:
            wait_for("the first snapshot", heard.count)
            before = heard.count()
            for i in range(10):
                stub.Create(cluster_pb2.CreateRequest(
                    object=cluster_pb2.Object(service=a_service(f"s{i}"))))
            wait_for("all ten", lambda: len(heard.last.services) == 10)
            assert heard.count() - before < 10
        finally:
            catalog.close()


# --- against a scripted fake ----------------------------------------------------------


class FakeWatch(cluster_pb2_grpc.ClusterServiceServicer):
    """Each Watch call of a kind plays that kind's next script, then what the test
    pushes for it (None, in a script or pushed, ends the stream)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[cluster_pb2.WatchRequest] = []
        self.scripts: dict[str, list[list[W | None]]] = {"Service": [], "Endpoints": [], "Node": []}
        self.pushed: dict[str, queue.Queue[W | None]] = {k: queue.Queue() for k in self.scripts}

    def Watch(self, request: cluster_pb2.WatchRequest,
              context: grpc.ServicerContext) -> Iterator[W]:
        with self.lock:
            self.requests.append(request)
            scripts = self.scripts[request.kind]
            script = scripts.pop(0) if scripts else [W(type=W.BOOKMARK, revision=1)]
        for event in script:
            if event is None:
                return
            yield event
        while context.is_active():
            try:
                item = self.pushed[request.kind].get(timeout=0.05)
            except queue.Empty:
                continue
            if item is None:
                return
            yield item

    def requested(self, kind: str) -> list[int]:
        with self.lock:
            return [r.from_revision for r in self.requests if r.kind == kind]


def svc_event(kind: int, name: str, revision: int, ip: str = "10.96.0.1") -> W:
    event = W(type=kind, revision=revision)  # type: ignore[arg-type]
    event.object.service.CopyFrom(a_service(name, ip))
    return event


@pytest.fixture
def fake() -> Iterator[tuple[FakeWatch, str]]:
    servicer = FakeWatch()  # type: ignore[abstract]  # only Watch is served
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        for q in servicer.pushed.values():
            q.put(None)
        server.stop(grace=None).wait()


def test_relist_order_and_broken_list_list_again_and_resume(
        fake: tuple[FakeWatch, str]) -> None:
    servicer, address = fake
    servicer.scripts["Service"] = [
        # A list broken before its BOOKMARK: incomplete, listed again.
        [svc_event(W.ADDED, "half", 5), None],
        [svc_event(W.ADDED, "a", 10), svc_event(W.ADDED, "b", 10), W(type=W.BOOKMARK, revision=10),
         svc_event(W.MODIFIED, "a", 11, "10.96.0.9"),
         W(type=W.ERROR, message="too far behind", relist=True)],
        # The relist: "b" went away while the agent was not looking.
        [svc_event(W.ADDED, "a", 20, "10.96.0.9"), W(type=W.BOOKMARK, revision=20)],
    ]
    heard = Heard()
    catalog = ClusterCatalog(address, threading.Event())
    catalog.subscribe(heard)
    catalog.start()
    try:
        wait_for("the relist", lambda: servicer.requested("Service")[:3] == [0, 0, 0])
        wait_for("b gone", lambda: heard.count() and set(heard.last.services) ==
                 {("default", "a")})
        assert heard.last.services["default", "a"].spec.cluster_ip == "10.96.0.9"
        assert all(("default", "half") not in c.services for c in heard.snapshots)

        # A stream that ends after the list resumes from the last revision seen.
        servicer.pushed["Service"].put(svc_event(W.ADDED, "c", 21))
        wait_for("c", lambda: ("default", "c") in heard.last.services)
        servicer.pushed["Service"].put(None)
        wait_for("the resume", lambda: servicer.requested("Service")[3:] == [21])
        servicer.pushed["Service"].put(svc_event(W.DELETED, "a", 22))
        wait_for("a gone", lambda: set(heard.last.services) == {("default", "c")})
    finally:
        catalog.close()


def test_nothing_is_heard_until_every_kind_is_listed(fake: tuple[FakeWatch, str]) -> None:
    servicer, address = fake
    servicer.scripts["Endpoints"] = [[]]  # listed only when the test says so
    servicer.scripts["Service"] = [[svc_event(W.ADDED, "a", 3), W(type=W.BOOKMARK, revision=3)]]
    heard = Heard()
    catalog = ClusterCatalog(address, threading.Event())
    catalog.subscribe(heard)
    catalog.start()
    try:
        wait_for("both streams", lambda: servicer.requested("Endpoints")
                 and servicer.requested("Service") and servicer.requested("Node"))
        time.sleep(0.2)
        assert heard.count() == 0 and not catalog.synced
        servicer.pushed["Endpoints"].put(W(type=W.BOOKMARK, revision=3))
        assert catalog.wait_synced(10)
        wait_for("the first snapshot", heard.count)
        assert set(heard.last.services) == {("default", "a")}
    finally:
        catalog.close()


def test_an_absent_scheduler_is_retried_without_a_crash() -> None:
    with running_scheduler() as scheduler:
        address = f"127.0.0.1:{scheduler.port}"
    catalog = ClusterCatalog(address, threading.Event())  # nobody listens there now
    catalog.start()
    try:
        time.sleep(0.5)
        assert not catalog.synced
        assert catalog.snapshot() == Catalog()
    finally:
        catalog.close()


def test_a_failing_subscriber_does_not_stop_the_others(fake: tuple[FakeWatch, str]) -> None:
    _, address = fake
    heard = Heard()

    def broken(catalog: Catalog) -> None:
        raise RuntimeError("boom")

    catalog = ClusterCatalog(address, threading.Event())
    catalog.subscribe(broken)
    catalog.subscribe(heard)
    catalog.start()
    try:
        wait_for("the snapshot", heard.count)
    finally:
        catalog.close()


def test_periodic_resync_notifies_without_changes(fake: tuple[FakeWatch, str]) -> None:
    _, address = fake
    heard = Heard()
    catalog = ClusterCatalog(address, threading.Event(), resync_every=0.2)
    catalog.subscribe(heard)
    catalog.start()
    try:
        wait_for("three notifications", lambda: heard.count() >= 3)
    finally:
        catalog.close()
