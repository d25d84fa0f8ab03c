"""Endpoints controller: the subsets on plain objects, then the runner on the
fake cluster (and once on the real registry, whose validation the written
Endpoints must pass)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proto.podium.v1 import cluster_pb2, node_pb2, pod_pb2, service_pb2
from scheduler.api.registry import Registry
from scheduler.controllers import ControllerManager, EndpointsController, Leases
from scheduler.controllers.endpoints import NO_TRAFFIC, ingress_ips, plan_subsets
from scheduler.objects import Key, wrap
from scheduler.store import open_store
from tests.unit.test_scheduler_controllers_fake import FakeCluster

WEB = {"app": "web"}


def pod(name: str, ip: str = "", *, ready: bool = True, labels: dict[str, str] | None = None,
        node: str = "n1", ports: tuple[tuple[str, int], ...] = (("http", 8080),),
        phase: str = "Running", namespace: str = "default") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = name, namespace, f"uid-{name}"
    p.metadata.labels.update(WEB if labels is None else labels)
    c = p.spec.containers.add(name="c", image="busybox")
    for port_name, number in ports:
        c.ports.add(name=port_name, container_port=number, protocol="TCP")
    p.spec.node_name = node
    p.status.phase = phase
    p.status.pod_ip = ip
    p.status.conditions.add(type="Ready", status="True" if ready else "False")
    return p


def service(name: str = "web", *targets: int | str, type: str = "ClusterIP",
            selector: dict[str, str] | None = None) -> service_pb2.Service:
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace, svc.metadata.uid = name, "default", f"uid-{name}"
    svc.metadata.labels["team"] = "a"
    svc.spec.type = type
    svc.spec.selector.update(WEB if selector is None else selector)
    for i, target in enumerate(targets or (8080,)):
        port = svc.spec.ports.add(port=80 + i, protocol="TCP")
        if len(targets) > 1:
            port.name = f"p{i}"
        if isinstance(target, str):
            port.target_port.str_value = target
        else:
            port.target_port.int_value = target
    return svc


def ips(addresses: object) -> list[str]:
    return [a.ip for a in addresses]  # type: ignore[attr-defined]


# --- the decision ----------------------------------------------------------------


def test_ready_pods_are_addresses_the_others_not_ready_the_rest_left_out() -> None:
    pods = [pod("b", "10.88.0.12"), pod("a", "10.88.0.3"),
            pod("slow", "10.88.0.7", ready=False),
            pod("no-ip"), pod("done", "10.88.0.8", phase="Succeeded"),
            pod("failed", "10.88.0.9", phase="Failed"),
            pod("other", "10.88.0.10", labels={"app": "db"}),
            pod("elsewhere", "10.88.0.11", namespace="team")]
    going = pod("going", "10.88.0.13")
    going.metadata.deletion_timestamp.GetCurrentTime()
    [subset] = plan_subsets(service(), [*pods, going])
    assert ips(subset.addresses) == ["10.88.0.3", "10.88.0.12"]  # sorted as numbers
    assert ips(subset.not_ready_addresses) == ["10.88.0.7"]
    assert [(p.name, p.port, p.protocol) for p in subset.ports] == [("", 8080, "TCP")]
    first = subset.addresses[0]
    assert first.node_name == "n1" and first.hostname == ""
    assert (first.target_ref.kind, first.target_ref.namespace, first.target_ref.name,
            first.target_ref.uid) == ("Pod", "default", "a", "uid-a")


def test_publish_not_ready_addresses_puts_every_pod_in_addresses() -> None:
    svc = service()
    svc.spec.publish_not_ready_addresses = True
    [subset] = plan_subsets(svc, [pod("a", "10.88.0.3"), pod("b", "10.88.0.4", ready=False)])
    assert ips(subset.addresses) == ["10.88.0.3", "10.88.0.4"]
    assert not subset.not_ready_addresses


def test_named_ports_resolve_per_pod_and_group_into_subsets() -> None:
    pods = [pod("old", "10.88.0.2", ports=(("http", 8080),)),
            pod("new", "10.88.0.3", ports=(("http", 9090), ("metrics", 9100))),
            pod("bare", "10.88.0.4", ports=())]
    subsets = plan_subsets(service("web", "http", "metrics"), pods)
    got = [(ips(s.addresses), [(p.name, p.port) for p in s.ports]) for s in subsets]
    assert got == [(["10.88.0.2"], [("p0", 8080)]),
                   (["10.88.0.3"], [("p0", 9090), ("p1", 9100)])]  # "bare" has neither


def test_hostname_only_under_the_services_subdomain() -> None:
    named = pod("a", "10.88.0.3")
    named.spec.hostname, named.spec.subdomain = "db-0", "web"
    elsewhere = pod("b", "10.88.0.4")
    elsewhere.spec.hostname, elsewhere.spec.subdomain = "db-1", "other"
    [subset] = plan_subsets(service(), [named, elsewhere])
    assert [a.hostname for a in subset.addresses] == ["db-0", ""]


def node(name: str, ip: str, ready: bool = True) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.status.conditions.add(type="Ready", status="True" if ready else "Unknown")
    n.status.addresses.add(type="Hostname", address=name)
    n.status.addresses.add(type="InternalIP", address=ip)
    return n


def test_ingress_is_the_ready_nodes_internal_ips_sorted() -> None:
    nodes = [node("n3", "192.168.1.10"), node("n1", "192.168.1.9"),
             node("down", "192.168.1.2", ready=False)]
    assert ingress_ips(nodes) == ["192.168.1.9", "192.168.1.10"]


# --- the runner on the fake cluster -----------------------------------------------


def stored_endpoints(cluster: FakeCluster, name: str = "web") -> service_pb2.Endpoints:
    return cluster.get(Key("Endpoints", "default", name)).endpoints


def put_pod(cluster: FakeCluster, p: pod_pb2.Pod) -> cluster_pb2.Object:
    status = pod_pb2.PodStatus()
    status.CopyFrom(p.status)
    stored = cluster.create(wrap(p))
    stored.pod.status.CopyFrom(status)
    return cluster.update_status(stored)


def set_ready(cluster: FakeCluster, name: str, ready: bool) -> None:
    obj = cluster.get(Key("Pod", "default", name))
    obj.pod.status.conditions[0].status = "True" if ready else "False"
    cluster.update_status(obj)


def test_runner_keeps_endpoints_without_churn_and_follows_readiness() -> None:
    cluster = FakeCluster()
    put_pod(cluster, pod("a", "10.88.0.3"))
    put_pod(cluster, pod("b", "10.88.0.4"))
    svc = cluster.create(wrap(service()))
    ctl = EndpointsController(cluster)
    ctl.step()
    ep = stored_endpoints(cluster)
    assert ips(ep.subsets[0].addresses) == ["10.88.0.3", "10.88.0.4"]
    assert dict(ep.metadata.labels) == {"team": "a"}
    [owner] = ep.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "Service", "web", svc.service.metadata.uid, True)
    writes = cluster.writes
    ctl.step()
    ctl.step()
    assert cluster.writes == writes  # nothing changed, nothing written
    # One pass after a readiness change moves the pod, without waiting for a resync.
    set_ready(cluster, "a", False)
    ctl.step()
    ep = stored_endpoints(cluster)
    assert ips(ep.subsets[0].addresses) == ["10.88.0.4"]
    assert ips(ep.subsets[0].not_ready_addresses) == ["10.88.0.3"]
    set_ready(cluster, "a", True)
    ctl.step()
    assert ips(stored_endpoints(cluster).subsets[0].addresses) == ["10.88.0.3", "10.88.0.4"]
    # A pod that goes away leaves; the Service going takes its Endpoints along.
    cluster.delete(Key("Pod", "default", "b"))
    ctl.step()
    assert ips(stored_endpoints(cluster).subsets[0].addresses) == ["10.88.0.3"]
    cluster.delete(Key("Service", "default", "web"))
    ctl.step()
    assert cluster.of("Endpoints") == []


def test_endpoints_someone_changed_are_put_back() -> None:
    cluster = FakeCluster()
    put_pod(cluster, pod("a", "10.88.0.3"))
    cluster.create(wrap(service()))
    ctl = EndpointsController(cluster)
    ctl.step()
    tampered = cluster.get(Key("Endpoints", "default", "web"))
    del tampered.endpoints.subsets[:]
    cluster.update(tampered)
    ctl.step()
    assert ips(stored_endpoints(cluster).subsets[0].addresses) == ["10.88.0.3"]


def test_a_service_without_selector_leaves_its_endpoints_alone() -> None:
    cluster = FakeCluster()
    manual = service_pb2.Endpoints()
    manual.metadata.name, manual.metadata.namespace = "external", "default"
    manual.subsets.add().addresses.add(ip="192.0.2.1")
    cluster.create(wrap(manual))
    cluster.create(wrap(service("external", selector={})))
    put_pod(cluster, pod("a", "10.88.0.3"))
    ctl = EndpointsController(cluster)
    ctl.step()
    assert ips(stored_endpoints(cluster, "external").subsets[0].addresses) == ["192.0.2.1"]
    cluster.delete(Key("Service", "default", "external"))
    ctl.step()  # not ours: stays
    assert [e.endpoints.metadata.name for e in cluster.of("Endpoints")] == ["external"]
    assert cluster.events == []


def node_object(cluster: FakeCluster, name: str, ip: str, ready: bool = True) -> None:
    cluster.create(wrap(node(name, ip, ready)))


def ingress(cluster: FakeCluster, name: str = "web") -> list[str]:
    lb = cluster.get(Key("Service", "default", name)).service.status.load_balancer
    return [i.ip for i in lb.ingress]


def test_load_balancer_ingress_follows_the_ready_nodes() -> None:
    cluster = FakeCluster()
    node_object(cluster, "n2", "192.168.1.12")
    node_object(cluster, "n1", "192.168.1.11")
    cluster.create(wrap(service("web", type="LoadBalancer")))
    cluster.create(wrap(service("plain")))
    ctl = EndpointsController(cluster)
    ctl.step()
    assert ingress(cluster) == ["192.168.1.11", "192.168.1.12"]
    assert ingress(cluster, "plain") == []
    down = cluster.get(Key("Node", "", "n2"))
    down.node.status.conditions[0].status = "Unknown"
    cluster.update_status(down)
    node_object(cluster, "n3", "192.168.1.13")
    ctl.step()
    assert ingress(cluster) == ["192.168.1.11", "192.168.1.13"]
    # A heartbeat that changes nothing about readiness or addresses is no work.
    writes = cluster.writes
    beat = cluster.get(Key("Node", "", "n1"))
    beat.node.status.capacity["cpu"] = "8"
    cluster.update_status(beat)
    ctl.step()
    assert cluster.writes == writes + 1
    # Back to ClusterIP: no ingress.
    svc = cluster.get(Key("Service", "default", "web"))
    svc.service.spec.type = "ClusterIP"
    cluster.update(svc)
    ctl.step()
    assert ingress(cluster) == []


def test_why_no_traffic_is_a_warning_event_once_per_reason() -> None:
    cluster = FakeCluster()
    cluster.create(wrap(service("web", 80)))
    ctl = EndpointsController(cluster)
    ctl.step()
    ctl.step()
    assert cluster.events == [(Key("Service", "default", "web"), NO_TRAFFIC,
                               "selector app=web matches no pods in namespace default",
                               "Warning")]
    put_pod(cluster, pod("a", "10.88.0.3", ports=(("", 8888),)))
    ctl.step()
    ctl.step()
    assert [e[2] for e in cluster.events[1:]] == [
        "port 80/TCP: no selected container declares port 80 (they declare 8888/TCP); "
        "connections will be refused unless something listens there"]
    # Traffic still goes to the pod's address (Kubernetes does the same).
    ep = stored_endpoints(cluster)
    assert [(ips(s.addresses), [p.port for p in s.ports]) for s in ep.subsets] == [
        (["10.88.0.3"], [80])]


def test_a_deployments_template_counts_before_its_pods_exist() -> None:
    from tests.unit.test_scheduler_controllers_replicaset import make_rs

    cluster = FakeCluster()
    rs = make_rs()  # selects and labels app=web, one container "c" without ports
    rs.spec.template.spec.containers[0].ports.add(container_port=8080, protocol="TCP")
    cluster.create(wrap(rs))
    cluster.create(wrap(service("web", 8080)))
    ctl = EndpointsController(cluster)
    ctl.step()
    assert cluster.events == []
    assert list(stored_endpoints(cluster).subsets) == []


def test_the_manager_runs_the_endpoints_controller() -> None:
    manager = ControllerManager(FakeCluster(), Leases())
    assert any(isinstance(c, EndpointsController) for c in manager.controllers)
    manager.close()


# --- on the real registry ---------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[Registry]:
    store = open_store("memory")
    reg = Registry(store)
    reg.ensure_namespace("default")
    yield reg
    store.close()


def test_what_the_controller_writes_passes_the_registrys_validation(registry: Registry) -> None:
    registry.create(wrap(node("n1", "192.168.1.11")))
    lb = service("web", "http", 8080, type="LoadBalancer")
    lb.metadata.uid = ""
    registry.create(wrap(lb))
    for name, ip in (("a", "10.88.0.3"), ("b", "10.88.0.4")):
        p = pod(name, ip, ports=(("http", 8080),))
        status = pod_pb2.PodStatus()
        status.CopyFrom(p.status)
        p.metadata.uid = ""
        p.ClearField("status")
        stored = registry.create(wrap(p))
        stored.pod.status.CopyFrom(status)
        registry.update_status(stored)
    ctl = EndpointsController(registry)
    ctl.step()
    ep = registry.get(Key("Endpoints", "default", "web")).endpoints
    assert [(ips(s.addresses), [(p.name, p.port, p.protocol) for p in s.ports])
            for s in ep.subsets] == [(["10.88.0.3", "10.88.0.4"],
                                      [("p0", 8080, "TCP"), ("p1", 8080, "TCP")])]
    svc = registry.get(Key("Service", "default", "web")).service
    assert [i.ip for i in svc.status.load_balancer.ingress] == ["192.168.1.11"]
    ctl.close()
