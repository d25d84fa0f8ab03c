"""Services in the registry: cluster IPs and node ports handed out once, kept,
freed, refused with the field named; and the warnings that say why a Service
would carry no traffic (`why_no_traffic`), through Create and Apply too."""

from __future__ import annotations

import ipaddress
import random
import threading
from collections.abc import Iterator

import pytest

from proto.kube import load_objects
from proto.podium.v1 import apps_pb2, cluster_pb2, pod_pb2, service_pb2
from scheduler.api.allocation import ServiceAllocator, cluster_dns_address, service_network
from scheduler.api.errors import Precondition
from scheduler.api.registry import Registry
from scheduler.api.service_checks import templates_of, why_no_traffic
from scheduler.api.validation import Invalid
from scheduler.cli import parser
from scheduler.objects import Key, wrap
from scheduler.store import open_store
from tests.support.cluster import client, running_scheduler
from tests.support.examples import tornado


@pytest.fixture
def registry() -> Iterator[Registry]:
    store = open_store("memory")
    reg = Registry(store)
    reg.ensure_namespace("default")
    yield reg
    store.close()


def service(name: str = "web", *, type: str = "", cluster_ip: str = "",
            ports: tuple[tuple[int, int | str, str], ...] = ((80, 8080, "TCP"),),
            node_ports: tuple[int, ...] = (), selector: dict[str, str] | None = None,
            namespace: str = "default") -> service_pb2.Service:
    svc = service_pb2.Service()
    svc.metadata.name, svc.metadata.namespace = name, namespace
    svc.spec.type = type
    svc.spec.cluster_ip = cluster_ip
    svc.spec.selector.update({"app": "web"} if selector is None else selector)
    for i, (port, target, protocol) in enumerate(ports):
        p = svc.spec.ports.add(port=port, protocol=protocol)
        if len(ports) > 1:
            p.name = f"p{i}"
        if isinstance(target, str):
            p.target_port.str_value = target
        else:
            p.target_port.int_value = target
        if i < len(node_ports):
            p.node_port = node_ports[i]
    return svc


def create(reg: Registry, svc: service_pb2.Service) -> service_pb2.Service:
    return reg.create(wrap(svc)).service


def invalid(call: object) -> Invalid:
    with pytest.raises(Invalid) as caught:
        call()  # type: ignore[operator]
    return caught.value


def small_allocator(cidr: str, services: list[service_pb2.Service],
                    seed: int = 0) -> ServiceAllocator:
    return ServiceAllocator(lambda: services, cidr, rng=random.Random(seed))


# --- cluster IPs -----------------------------------------------------------------


def test_a_network_hands_out_every_address_but_its_own_broadcast_and_dns() -> None:
    stored: list[service_pb2.Service] = []
    alloc = small_allocator("10.50.0.0/28", stored)
    for i in range(13):
        svc = service(f"s{i}")
        alloc.assign(svc)
        assert list(svc.spec.cluster_ips) == [svc.spec.cluster_ip]
        stored.append(svc)
    got = {s.spec.cluster_ip for s in stored}
    network = ipaddress.ip_network("10.50.0.0/28")
    assert got == {str(ip) for ip in network.hosts()} - {"10.50.0.10"}
    with pytest.raises(Precondition, match="no free address left in the service network"):
        alloc.assign(service("one-too-many"))


def test_the_dns_address_is_the_tenth() -> None:
    assert cluster_dns_address() == "10.96.0.10"
    assert cluster_dns_address("10.100.0.0/24") == "10.100.0.10"
    for bad, why in (("10.96.0.1/16", "host bits"), ("10.96.0.0/29", "too small"),
                     ("fd00::/64", "IPv4"), ("nonsense", "nonsense")):
        with pytest.raises(ValueError, match=why):
            service_network(bad)


def test_addresses_are_not_handed_out_lowest_first() -> None:
    stored: list[service_pb2.Service] = []
    alloc = small_allocator("10.96.0.0/16", stored, seed=7)
    picked = []
    for i in range(5):
        svc = service(f"s{i}")
        alloc.assign(svc)
        stored.append(svc)
        picked.append(int(ipaddress.ip_address(svc.spec.cluster_ip)))
    lowest = int(ipaddress.ip_address("10.96.0.1"))
    assert picked != list(range(lowest, lowest + 5))


def test_a_requested_address_is_honoured_or_refused_naming_why(registry: Registry) -> None:
    first = create(registry, service("first", cluster_ip="10.96.3.4"))
    assert (first.spec.cluster_ip, list(first.spec.cluster_ips)) == ("10.96.3.4", ["10.96.3.4"])
    for ip, why in (("10.96.3.4", "10.96.3.4 is already allocated to Service default/first"),
                    ("10.97.0.1", "10.97.0.1 is outside the service network 10.96.0.0/16"),
                    ("10.96.0.10", "10.96.0.10 is reserved for the cluster DNS"),
                    ("10.96.0.0", "10.96.0.0 is the service network's own address"),
                    ("10.96.255.255", "10.96.255.255 is the service network's broadcast "
                                      "address")):
        error = invalid(lambda ip=ip: create(registry, service("second", cluster_ip=ip)))
        assert (error.field, error.message) == ("spec.clusterIP", why)


def test_an_address_handed_out_but_not_yet_stored_is_not_handed_out_again(
        registry: Registry) -> None:
    # What the servicers do: prepare, then store (a dry run stores nothing).
    held, _ = registry.prepare_create(wrap(service("a", cluster_ip="10.96.7.7")))
    error = invalid(lambda: registry.prepare_create(wrap(service("b", cluster_ip="10.96.7.7"))))
    assert error.message == "10.96.7.7 is already allocated to Service default/a"
    # The same Service asking again (the real write after its dry run) gets it.
    again, _ = registry.prepare_create(wrap(service("a")))
    assert again.service.spec.cluster_ip == held.service.spec.cluster_ip


def test_concurrent_creates_never_share_an_address() -> None:
    stored: list[service_pb2.Service] = []
    alloc = ServiceAllocator(lambda: list(stored), "10.60.0.0/26")
    got: list[str] = []
    lock = threading.Lock()

    def prepare(i: int) -> None:
        svc = service(f"s{i}")
        alloc.assign(svc)  # nothing is stored: only the holds keep them apart
        with lock:
            got.append(svc.spec.cluster_ip)

    threads = [threading.Thread(target=prepare, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40


def test_a_deleted_services_address_is_free_again(registry: Registry) -> None:
    create(registry, service("old", cluster_ip="10.96.9.9"))
    registry.delete(Key("Service", "default", "old"))
    assert create(registry, service("new", cluster_ip="10.96.9.9")).spec.cluster_ip == "10.96.9.9"


def test_headless_gets_no_address(registry: Registry) -> None:
    svc = create(registry, service("db", cluster_ip="None"))
    assert (svc.spec.cluster_ip, list(svc.spec.cluster_ips)) == ("None", ["None"])


def test_the_address_is_kept_and_immutable_on_update(registry: Registry) -> None:
    stored = create(registry, service("web"))
    ip = stored.spec.cluster_ip
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/16")
    # An update that leaves it out (as a re-applied manifest does) keeps it.
    edit = service("web")
    edit.metadata.resource_version = stored.metadata.resource_version
    edit.spec.ports[0].port = 81
    updated = registry.update(wrap(edit)).service
    assert (updated.spec.cluster_ip, list(updated.spec.cluster_ips)) == (ip, [ip])
    other = "10.96.1.1" if ip != "10.96.1.1" else "10.96.1.2"
    updated.spec.cluster_ip = other
    del updated.spec.cluster_ips[:]
    assert invalid(lambda: registry.update(wrap(updated))).field == "spec.clusterIP"


def test_the_service_cidr_is_a_setting() -> None:
    args = parser().parse_args(["--service-cidr", "10.100.0.0/24"])
    assert args.service_cidr == "10.100.0.0/24"
    with running_scheduler(service_cidr="10.100.0.0/24") as scheduler, \
            client(scheduler.port) as stub:
        answer = stub.Create(cluster_pb2.CreateRequest(object=wrap(service("web"))))
        ip = answer.object.service.spec.cluster_ip
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.100.0.0/24")
        assert ip != "10.100.0.10"
        # Nothing selects app=web yet: the writer is told so.
        assert list(answer.warnings) == ["selector app=web matches no pods in namespace default"]


# --- node ports ------------------------------------------------------------------


def test_node_ports_are_allocated_in_range_for_node_port_and_load_balancer(
        registry: Registry) -> None:
    node_port = create(registry, service("np", type="NodePort",
                                         ports=((80, 80, "TCP"), (53, 53, "UDP"))))
    lb = create(registry, service("lb", type="LoadBalancer"))
    plain = create(registry, service("plain"))
    numbers = [p.node_port for s in (node_port, lb) for p in s.spec.ports]
    assert all(30000 <= n <= 32767 for n in numbers) and len(set(numbers)) == 3
    assert [p.node_port for p in plain.spec.ports] == [0]


def test_a_requested_node_port_is_honoured_per_protocol_or_refused(registry: Registry) -> None:
    create(registry, service("a", type="NodePort", node_ports=(30080,)))
    same_number_udp = create(registry, service("b", type="NodePort", ports=((53, 53, "UDP"),),
                                               node_ports=(30080,)))
    assert same_number_udp.spec.ports[0].node_port == 30080
    error = invalid(lambda: create(registry, service("c", type="NodePort",
                                                     ports=((80, 80, "TCP"), (81, 81, "TCP")),
                                                     node_ports=(30081, 30080))))
    assert (error.field, error.message) == (
        "spec.ports[1].nodePort",
        "30080/TCP: provided port is already allocated to Service default/a")


def test_node_ports_stay_across_updates_and_go_with_type_cluster_ip(registry: Registry) -> None:
    stored = create(registry, service("web", type="NodePort"))
    number = stored.spec.ports[0].node_port
    reapplied = service("web", type="NodePort")  # the manifest again, without nodePort
    reapplied.metadata.resource_version = stored.metadata.resource_version
    again = registry.update(wrap(reapplied)).service
    assert again.spec.ports[0].node_port == number
    again.spec.type = "ClusterIP"  # an Update of the whole object read back
    again.ClearField("status")
    plain = registry.update(wrap(again)).service
    assert plain.spec.ports[0].node_port == 0
    # ...and the port is free for another Service at once.
    taker = create(registry, service("taker", type="NodePort", node_ports=(number,)))
    assert taker.spec.ports[0].node_port == number


def test_a_node_port_within_one_service_is_refused_by_validation(registry: Registry) -> None:
    error = invalid(lambda: create(registry, service(
        "dup", type="NodePort", ports=((80, 80, "TCP"), (81, 81, "TCP")),
        node_ports=(30100, 30100))))
    assert error.field == "spec.ports[1].nodePort"


# --- why no traffic --------------------------------------------------------------


def template(labels: dict[str, str], *ports: tuple[int, str, str]) -> pod_pb2.PodTemplateSpec:
    t = pod_pb2.PodTemplateSpec()
    t.metadata.labels.update(labels)
    c = t.spec.containers.add(name="c", image="busybox")
    for number, name, protocol in ports:
        c.ports.add(container_port=number, name=name, protocol=protocol)
    return t


def test_why_no_traffic_names_each_reason() -> None:
    web = template({"app": "web"}, (8888, "http", "TCP"))
    assert why_no_traffic(service(ports=((80, 8888, "TCP"),)), [web]) == []
    assert why_no_traffic(service(ports=((80, "http", "TCP"),)), [web]) == []
    assert why_no_traffic(service(), [template({"app": "db"})]) == [
        "selector app=web matches no pods in namespace default"]
    assert why_no_traffic(service(ports=((80, 80, "TCP"),)), [web]) == [
        "port 80/TCP: no selected container declares port 80 (they declare 8888/TCP); "
        "connections will be refused unless something listens there"]
    assert why_no_traffic(service(ports=((80, "metrics", "TCP"),)), [web]) == [
        "port 80/TCP: no selected container has a TCP port named metrics (they declare "
        "8888/TCP); the port gets no endpoints"]
    # Protocols count: 8888/UDP is not 8888/TCP.
    assert len(why_no_traffic(service(ports=((80, 8888, "UDP"),)), [web])) == 1
    # No selector: the Endpoints are the user's business.
    assert why_no_traffic(service(selector={}), []) == []


def test_templates_leave_out_finished_and_deleted_pods() -> None:
    live = pod_pb2.Pod()
    live.metadata.labels["app"] = "web"
    done = pod_pb2.Pod()
    done.CopyFrom(live)
    done.status.phase = "Succeeded"
    going = pod_pb2.Pod()
    going.CopyFrom(live)
    going.metadata.deletion_timestamp.GetCurrentTime()
    found = templates_of([wrap(live), wrap(done), wrap(going)])
    assert [dict(t.metadata.labels) for t in found] == [{"app": "web"}]


def test_tornado_warns_about_port_80_against_its_deployment(registry: Registry) -> None:
    docs = {d.object.WhichOneof("kind"): d.object for d in load_objects(tornado(), "t.yaml")}
    # Services go after the rest of an apply, so the Deployment is there first.
    registry.create(docs["deployment"])
    _, warnings = registry.prepare_create(docs["service"])
    assert warnings == [
        "port 80/TCP: no selected container declares port 80 (they declare 8888/TCP); "
        "connections will be refused unless something listens there"]


def test_update_warns_too_and_a_fixed_port_is_quiet(registry: Registry) -> None:
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.spec.selector.match_labels["app"] = "web"
    d.spec.template.CopyFrom(template({"app": "web"}, (8080, "http", "TCP")))
    registry.create(wrap(d))
    stored = create(registry, service(ports=((80, 9090, "TCP"),)))
    fixed = service(ports=((80, "http", "TCP"),))
    fixed.metadata.resource_version = stored.metadata.resource_version
    broken = service(ports=((80, 9090, "TCP"),))
    broken.metadata.resource_version = stored.metadata.resource_version
    _, warnings = registry.prepare_update(wrap(broken))
    assert warnings and "declares port 9090" in warnings[0]
    _, warnings = registry.prepare_update(wrap(fixed))
    assert warnings == []


def test_a_dry_run_and_the_real_write_get_the_same_node_ports() -> None:
    stored: list[service_pb2.Service] = []
    alloc = ServiceAllocator(lambda: stored, node_ports=(30000, 30003))
    dry = service("web", type="NodePort", ports=((80, 80, "TCP"), (81, 81, "TCP")))
    real = service_pb2.Service()
    real.CopyFrom(dry)
    alloc.assign(dry)
    alloc.assign(real)
    assert [p.node_port for p in real.spec.ports] == [p.node_port for p in dry.spec.ports]
    stored.append(real)
    alloc.assign(service("more", type="NodePort", ports=((80, 80, "TCP"), (81, 81, "TCP"))))
    with pytest.raises(Precondition, match="no free node port left in 30000-30003"):
        alloc.assign(service("full", type="NodePort"))
