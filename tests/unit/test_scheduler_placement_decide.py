"""decide(): the message when nothing fits, sampling with a rotating start,
spreading, and invariants over random clusters (hypothesis)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from proto.podium.v1 import node_pb2, pod_pb2
from scheduler.placement import Framework, PodInfo, Snapshot, decide
from tests.unit.test_scheduler_placement_plugins import make_node, make_pod


def place(fw: Framework, snap: Snapshot, pod: pod_pb2.Pod) -> str | None:
    """Decides, then assumes the pod on the node as the loop does."""
    d = fw.decide(pod, snap)
    if d.node is not None:
        pod.spec.node_name = d.node
        snap.set_pod(pod)
    return d.node


def test_message_in_kubernetes_shape() -> None:
    snap = Snapshot.build([
        make_node("a", memory="1Gi"), make_node("b", memory="1Gi"),
        make_node("c", ready=False),
    ], [])
    d = decide(make_pod("p", memory="2Gi"), snap)
    assert d.node is None
    assert d.reasons == {"Insufficient memory": 2, "node(s) NotReady": 1}
    assert d.message == "0/3 nodes are available: 2 Insufficient memory, 1 node(s) NotReady."


def test_no_nodes() -> None:
    d = decide(make_pod("p"), Snapshot())
    assert (d.node, d.message) == (None, "no nodes available to schedule pods")


def test_unreadable_pod_is_a_decision_not_a_crash() -> None:
    d = decide(make_pod("p", cpu="x"), Snapshot.build([make_node("a")], []))
    assert d.node is None and "containers[0]" in d.message


def test_sampling_stops_after_enough_feasible_and_rotates() -> None:
    nodes = [make_node(f"n{i:03d}") for i in range(200)]
    snap = Snapshot.build(nodes, [])
    fw = Framework(min_feasible_nodes=10, percentage_of_nodes_to_score=1)
    seen: set[str] = set()
    for i in range(20):
        d = fw.decide(make_pod(f"p{i}"), snap)
        assert (d.evaluated, d.feasible) == (10, 10)
        assert d.node is not None
        seen.add(d.node)
    # Each decision looked at the next 10 nodes, so all 200 took their turn.
    assert len(seen) == 20
    assert seen <= {n.metadata.name for n in nodes}


def test_sample_size() -> None:
    fw = Framework()
    assert fw.feasible_wanted(50) == 50
    assert fw.feasible_wanted(1000) == 100
    assert fw.feasible_wanted(5000) == 250
    assert Framework(percentage_of_nodes_to_score=50).feasible_wanted(1000) == 500


def test_sampling_still_finds_a_rare_feasible_node() -> None:
    nodes = [make_node(f"n{i:03d}", ready=(i == 137)) for i in range(300)]
    fw = Framework(min_feasible_nodes=5, percentage_of_nodes_to_score=1)
    d = fw.decide(make_pod("p"), Snapshot.build(nodes, []))
    assert d.node == "n137"


def test_six_replicas_on_three_equal_nodes_spread_two_each() -> None:
    snap = Snapshot.build([make_node(n) for n in "abc"], [])
    fw = Framework()
    placed = Counter(place(fw, snap, make_pod(f"web-{i}", "100m", "64Mi", owner="web"))
                     for i in range(6))
    assert placed == {"a": 2, "b": 2, "c": 2}


def test_replicas_spread_even_when_another_controller_crowds_a_node() -> None:
    bound = [make_pod(f"db-{i}", node="a", owner="db") for i in range(3)]
    snap = Snapshot.build([make_node(n, cpu="64", memory="256Gi") for n in "abc"], bound)
    fw = Framework()
    placed = Counter(place(fw, snap, make_pod(f"web-{i}", owner="web")) for i in range(3))
    assert placed == {"a": 1, "b": 1, "c": 1}


def test_equal_nodes_take_turns() -> None:
    # Scoring off: every node ties, and ties go round-robin.
    snap = Snapshot.build([make_node(n) for n in "abcd"], [])
    fw = Framework(scorers=[])
    assert [fw.decide(make_pod(f"p{i}"), snap).node for i in range(8)] == list("abcd" * 2)


# --- invariants over random clusters ---

@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[node_pb2.Node], list[pod_pb2.Pod]]:
    nodes = []
    for i in range(draw(st.integers(0, 12))):
        nodes.append(make_node(
            f"n{i}", cpu=str(draw(st.integers(0, 8))), memory=f"{draw(st.integers(0, 8))}Gi",
            pods=str(draw(st.integers(0, 6))), ready=draw(st.booleans()) or i % 3 != 0,
            unschedulable=draw(st.integers(0, 9)) == 0,
            labels={"zone": draw(st.sampled_from("ab"))},
            taints=[("gpu", "", "NoSchedule")] if draw(st.integers(0, 5)) == 0 else []))
    pods = []
    for i in range(draw(st.integers(1, 30))):
        pods.append(make_pod(
            f"p{i}", cpu=f"{draw(st.integers(0, 3000))}m",
            memory=f"{draw(st.integers(0, 3000))}Mi",
            owner=draw(st.sampled_from(["", "web", "db"])),
            selector=draw(st.sampled_from([{}, {}, {"zone": "a"}])),
            host_ports=draw(st.sampled_from([[], [], [80], [80, 443]])),
            tolerations=draw(st.sampled_from([[], [("gpu", "Exists", "", "")]]))))
    return nodes, pods


@settings(max_examples=150, deadline=None)
@given(clusters(), st.integers(1, 4))
def test_placement_invariants(cluster: tuple[list[node_pb2.Node], list[pod_pb2.Pod]],
                              min_feasible: int) -> None:
    nodes, pods = cluster
    snap = Snapshot.build(nodes, [])
    fw = Framework(min_feasible_nodes=min_feasible, percentage_of_nodes_to_score=1)
    for pod in pods:
        info = PodInfo.of(pod)
        d = fw.decide(info, snap)
        why = {n.name: fw.reject_reason(info, n) for n in snap.order}
        if d.node is None:
            # Sampling never hides a node that fits; each node counted once,
            # under the reason the filters give it.
            assert all(r is not None for r in why.values())
            assert d.reasons == Counter(why.values())
            assert sum(d.reasons.values()) == len(nodes)
        else:
            assert why[d.node] is None
            assert d.feasible <= max(min_feasible, len(nodes))
            pod.spec.node_name = d.node
            snap.set_pod(pod)
    for n in snap.order:
        assert n.milli_cpu <= n.alloc_milli_cpu
        assert n.memory <= n.alloc_memory
        assert n.pod_count <= n.alloc_pods
        assert all(sum(used.values()) == 1 for used in n.ports.values())
        for p in n.pods.values():
            assert p.node_selector.items() <= n.labels.items()


@settings(max_examples=100, deadline=None)
@given(clusters(), st.data())
def test_incremental_snapshot_equals_a_fresh_one(
        cluster: tuple[list[node_pb2.Node], list[pod_pb2.Pod]], data: st.DataObject) -> None:
    nodes, pods = cluster
    names = [n.metadata.name for n in nodes] + ["gone"]
    snap = Snapshot.build(nodes[: len(nodes) // 2], [])
    live_nodes = {n.metadata.name: n for n in nodes[: len(nodes) // 2]}
    live_pods: dict[str, pod_pb2.Pod] = {}
    for _ in range(data.draw(st.integers(0, 60))):
        op = data.draw(st.sampled_from(["pod", "pod", "pod", "unpod", "node", "unnode"]))
        if op == "pod":
            pod = pod_pb2.Pod()
            pod.CopyFrom(data.draw(st.sampled_from(pods)))
            pod.spec.node_name = data.draw(st.sampled_from(["", *names]))
            pod.status.phase = data.draw(st.sampled_from(["Pending", "Running", "Failed"]))
            live_pods[pod.metadata.name] = pod
            snap.set_pod(pod)
        elif op == "unpod" and live_pods:
            name = data.draw(st.sampled_from(sorted(live_pods)))
            snap.remove_pod(PodInfo.of(live_pods.pop(name)).key)
        elif op == "node" and nodes:
            node = data.draw(st.sampled_from(nodes))
            live_nodes[node.metadata.name] = node
            snap.set_node(node)
        elif op == "unnode" and live_nodes:
            name = data.draw(st.sampled_from(sorted(live_nodes)))
            del live_nodes[name]
            snap.remove_node(name)
    fresh = Snapshot.build(list(live_nodes.values()), list(live_pods.values()))
    assert sorted(n.name for n in snap.order) == sorted(live_nodes)
    for name in names:
        for a, b in [(snap._nodes.get(name), fresh._nodes.get(name))]:
            assert (a is None) == (b is None), name
            if a is not None and b is not None:
                assert (a.known, a.milli_cpu, a.memory, a.pod_count, a.score_milli_cpu,
                        a.score_memory, a.ports, a.controllers, set(a.pods)) == (
                    b.known, b.milli_cpu, b.memory, b.pod_count, b.score_milli_cpu,
                    b.score_memory, b.ports, b.controllers, set(b.pods)), name
