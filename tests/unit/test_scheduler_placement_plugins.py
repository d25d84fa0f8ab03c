"""Placement plugins one by one: each filter's rule and reason, each scorer,
a pod's requests, the registry. Builders here are shared by the other
placement tests."""

from __future__ import annotations

import pytest

from proto.podium.v1 import node_pb2, pod_pb2
from proto.quantity import QuantityError
from scheduler.placement import (
    DEFAULT_FILTERS,
    FILTERS,
    SCORERS,
    Framework,
    NodeInfo,
    PlacementError,
    PodInfo,
    Snapshot,
    pod_requests,
    register_filter,
)
from scheduler.placement import filters as f
from scheduler.placement.registry import NodeCheck


def make_node(name: str, cpu: str = "4", memory: str = "8Gi", pods: str = "110", *,
              ready: bool = True, unschedulable: bool = False,
              labels: dict[str, str] | None = None,
              taints: list[tuple[str, str, str]] | None = None) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.metadata.labels.update(labels or {})
    n.spec.unschedulable = unschedulable
    for key, value, effect in taints or []:
        n.spec.taints.add(key=key, value=value, effect=effect)
    n.status.allocatable.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.status.conditions.add(type="Ready", status="True" if ready else "False")
    return n


def make_pod(name: str, cpu: str = "", memory: str = "", *, namespace: str = "default",
             node: str = "", owner: str = "", selector: dict[str, str] | None = None,
             host_ports: list[int] | None = None,
             tolerations: list[tuple[str, str, str, str]] | None = None,
             rv: str = "1") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = namespace
    p.metadata.uid = f"uid-{name}"
    p.metadata.resource_version = rv
    if owner:
        p.metadata.owner_references.add(kind="ReplicaSet", name=owner, uid=f"rs-{owner}",
                                        controller=True)
    p.spec.node_name = node
    p.spec.node_selector.update(selector or {})
    c = p.spec.containers.add(name="main", image="busybox")
    if cpu:
        c.resources.requests["cpu"] = cpu
    if memory:
        c.resources.requests["memory"] = memory
    for port in host_ports or []:
        c.ports.add(container_port=port, host_port=port)
    for key, op, value, effect in tolerations or []:
        p.spec.tolerations.add(key=key, operator=op, value=value, effect=effect)
    p.status.phase = "Pending"
    return p


def reason(pod: pod_pb2.Pod, node: node_pb2.Node, *bound: pod_pb2.Pod) -> str | None:
    snap = Snapshot.build([node], list(bound))
    info = snap.node(node.metadata.name)
    assert info is not None
    return Framework().reject_reason(PodInfo.of(pod), info)


# --- requests ---

def test_requests_sum_containers_and_take_the_largest_init_container() -> None:
    p = make_pod("a", "250m", "100Mi")
    c = p.spec.containers.add(name="b")
    c.resources.requests.update({"cpu": "1", "memory": "1Gi"})
    assert pod_requests(p.spec) == (1250, 100 * 2**20 + 2**30)
    init = p.spec.init_containers.add(name="init")
    init.resources.requests.update({"cpu": "2", "memory": "1Mi"})
    assert pod_requests(p.spec) == (2000, 100 * 2**20 + 2**30)


def test_a_limit_without_a_request_is_the_request() -> None:
    p = make_pod("a", memory="64Mi")
    p.spec.containers[0].resources.limits.update({"cpu": "500m", "memory": "1Gi"})
    assert pod_requests(p.spec) == (500, 64 * 2**20)


def test_best_effort_requests_nothing_but_takes_a_pod_slot() -> None:
    assert pod_requests(make_pod("a").spec) == (0, 0)
    full = make_node("n", pods="1")
    assert reason(make_pod("a"), full, make_pod("b", node="n")) == f.TOO_MANY_PODS
    assert reason(make_pod("a"), make_node("n", cpu="0", memory="0")) is None


def test_an_unreadable_request_names_the_pod_and_container() -> None:
    p = make_pod("a", cpu="lots")
    with pytest.raises(QuantityError, match=r"pod default/a: containers\[0\].*cpu.*lots"):
        PodInfo.of(p)


# --- filters ---

def test_node_ready() -> None:
    assert reason(make_pod("a"), make_node("n")) is None
    assert reason(make_pod("a"), make_node("n", ready=False)) == "node(s) NotReady"
    bare = make_node("n")
    del bare.status.conditions[:]
    assert reason(make_pod("a"), bare) == "node(s) NotReady"


def test_node_unschedulable() -> None:
    got = reason(make_pod("a"), make_node("n", unschedulable=True))
    assert got == "node(s) were unschedulable"


def test_resources_fit_counts_what_is_bound() -> None:
    node = make_node("n", cpu="1", memory="1Gi")
    assert reason(make_pod("a", "1", "1Gi"), node) is None
    assert reason(make_pod("a", "1100m"), node) == "Insufficient cpu"
    assert reason(make_pod("a", memory="2Gi"), node) == "Insufficient memory"
    used = make_pod("b", "600m", "600Mi", node="n")
    assert reason(make_pod("a", "500m"), node, used) == "Insufficient cpu"
    assert reason(make_pod("a", "400m", "500Mi"), node, used) == "Insufficient memory"
    assert reason(make_pod("a", "400m", "424Mi"), node, used) is None
    # A finished pod uses nothing.
    used.status.phase = "Succeeded"
    assert reason(make_pod("a", "1", "1Gi"), node, used) is None


def test_node_selector() -> None:
    node = make_node("n", labels={"disk": "ssd", "zone": "a"})
    assert reason(make_pod("a", selector={"disk": "ssd"}), node) is None
    assert reason(make_pod("a", selector={"disk": "hdd"}), node) == f.SELECTOR_MISMATCH
    assert reason(make_pod("a", selector={"gpu": ""}), node) == f.SELECTOR_MISMATCH


def test_host_ports() -> None:
    node = make_node("n")
    used = make_pod("b", node="n", host_ports=[8080])
    assert reason(make_pod("a", host_ports=[8080]), node, used) == f.PORTS_IN_USE
    assert reason(make_pod("a", host_ports=[8081]), node, used) is None
    udp = make_pod("a", host_ports=[8080])
    udp.spec.containers[0].ports[0].protocol = "UDP"
    assert reason(udp, node, used) is None
    # Distinct addresses do not collide; the wildcard collides with any.
    on_ip = make_pod("c", node="n", host_ports=[9000])
    on_ip.spec.containers[0].ports[0].host_ip = "10.0.0.1"
    other_ip = make_pod("a", host_ports=[9000])
    other_ip.spec.containers[0].ports[0].host_ip = "10.0.0.2"
    assert reason(other_ip, node, on_ip) is None
    assert reason(make_pod("a", host_ports=[9000]), node, on_ip) == f.PORTS_IN_USE
    # With the node's network a container port is a node port.
    host_net = make_pod("a")
    host_net.spec.host_network = True
    host_net.spec.containers[0].ports.add(container_port=8080)
    assert reason(host_net, node, used) == f.PORTS_IN_USE


def test_taints_and_tolerations() -> None:
    node = make_node("n", taints=[("dedicated", "gpu", "NoSchedule")])
    assert reason(make_pod("a"), node) == "node(s) had untolerated taint {dedicated: gpu}"
    equal = [("dedicated", "Equal", "gpu", "NoSchedule")]
    assert reason(make_pod("a", tolerations=equal), node) is None
    wrong_value = [("dedicated", "Equal", "db", "NoSchedule")]
    assert reason(make_pod("a", tolerations=wrong_value), node) is not None
    exists = [("dedicated", "Exists", "", "")]
    assert reason(make_pod("a", tolerations=exists), node) is None
    everything = [("", "Exists", "", "")]
    assert reason(make_pod("a", tolerations=everything), node) is None
    other_effect = [("dedicated", "Exists", "", "NoExecute")]
    assert reason(make_pod("a", tolerations=other_effect), node) is not None
    # PreferNoSchedule only prefers: it filters nothing.
    soft = make_node("n", taints=[("dedicated", "gpu", "PreferNoSchedule")])
    assert reason(make_pod("a"), soft) is None
    no_exec = make_node("n", taints=[("maintenance", "", "NoExecute")])
    assert reason(make_pod("a"), no_exec) == "node(s) had untolerated taint {maintenance: }"


def test_first_filter_wins() -> None:
    node = make_node("n", cpu="0", ready=False, unschedulable=True)
    assert reason(make_pod("a", "1"), node) == "node(s) NotReady"


# --- scorers ---

def node_info(node: node_pb2.Node, *bound: pod_pb2.Pod) -> NodeInfo:
    info = Snapshot.build([node], list(bound)).node(node.metadata.name)
    assert info is not None
    return info


def test_least_allocated_prefers_room() -> None:
    score = SCORERS["LeastAllocated"].prepare(PodInfo.of(make_pod("a", "1", "1Gi")))
    assert score is not None
    empty = node_info(make_node("n", cpu="4", memory="4Gi"))
    busy = node_info(make_node("n", cpu="4", memory="4Gi"), make_pod("b", "2", "2Gi", node="n"))
    assert score(empty) == 75
    assert score(busy) == 25
    full = node_info(make_node("n", cpu="1", memory="1Gi"))
    assert score(full) == 0


def test_spread_prefers_fewer_of_the_same_controller() -> None:
    scorer = SCORERS["Spread"]
    assert scorer.prepare(PodInfo.of(make_pod("a"))) is None  # no controller: no opinion
    score = scorer.prepare(PodInfo.of(make_pod("a", owner="web")))
    assert score is not None
    nodes = [
        node_info(make_node("n"), make_pod("b", node="n", owner="web"),
                  make_pod("c", node="n", owner="web")),
        node_info(make_node("n"), make_pod("b", node="n", owner="web")),
        node_info(make_node("n"), make_pod("b", node="n", owner="db")),
    ]
    raw = [score(n) for n in nodes]
    assert raw == [2, 1, 0]
    scorer.normalize(raw)
    assert raw == [0, 50, 100]


# --- registry ---

def test_registry_names() -> None:
    assert set(FILTERS) >= {"NodeReady", "NodeUnschedulable", "ResourcesFit", "NodeSelector",
                            "HostPorts", "TaintToleration"}
    assert set(SCORERS) >= {"LeastAllocated", "Spread"}
    with pytest.raises(PlacementError, match="unknown filter plugin 'Nope'"):
        Framework(filters=["Nope"])
    with pytest.raises(PlacementError, match="unknown score plugin 'Nope'"):
        Framework(scorers=[("Nope", 1)])
    with pytest.raises(PlacementError, match="registered twice"):
        register_filter("NodeReady")(f.node_ready)


def test_a_registered_filter_takes_part() -> None:
    name = "TestOnlyOddNodes"
    if name not in FILTERS:
        @register_filter(name)
        def odd(pod: PodInfo) -> NodeCheck | None:
            return lambda node: None if node.name.endswith(("1", "3")) else "node(s) even"
    fw = Framework(filters=[*DEFAULT_FILTERS, name])
    snap = Snapshot.build([make_node(f"n{i}") for i in range(4)], [])
    decision = fw.decide(make_pod("a"), snap)
    assert decision.node in {"n1", "n3"}


def test_public_names() -> None:
    import scheduler.placement as placement
    assert sorted(placement.__all__) == sorted([
        "DEFAULT_FILTERS", "DEFAULT_SCORERS", "FILTERS", "SCORERS", "Decision", "Framework",
        "NodeCheck", "NodeInfo", "NodeScore", "PlacementError", "Placer", "PodInfo",
        "PodQueue", "Scorer", "Snapshot", "decide", "is_pending", "pod_requests",
        "register_filter", "register_scorer", "unschedulable_message",
    ])
    for name in placement.__all__:
        assert getattr(placement, name) is not None, name
