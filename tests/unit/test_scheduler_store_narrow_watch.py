"""Narrowed watches: of one node's pods (store.watch(..., node=)), where each change
reaches the watcher of the node its pod is bound to and no other node's; and of a
few kinds in one stream (store.watch(kinds=)), as a controller's informer keeps them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proto.podium.v1 import cluster_pb2
from scheduler.objects import Key, UnknownKind
from scheduler.store import Change, EventType, SqliteStore
from scheduler.store.base import Watch


def pod(name: str, node: str = "") -> cluster_pb2.Object:
    obj = cluster_pb2.Object()
    obj.pod.metadata.name = name
    obj.pod.metadata.namespace = "default"
    obj.pod.spec.containers.add(name="c", image="busybox")
    obj.pod.spec.node_name = node
    return obj


def drain(watch: Watch) -> list[Change]:
    changes = []
    while (change := watch.next(0.0)) is not None:
        changes.append(change)
    return changes


def seen(watch: Watch) -> list[tuple[EventType, str, str]]:
    """(type, pod, node) of every change waiting in the watch."""
    return [(c.type, c.object.pod.metadata.name, c.object.pod.spec.node_name)
            for c in drain(watch)]


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(None if request.param == "memory" else tmp_path / "store.db")
    yield s
    s.close()


def bind(store: SqliteStore, name: str, node: str) -> None:
    obj = store.get(Key("Pod", "default", name))
    obj.pod.spec.node_name = node
    store.update(obj)


def test_a_node_watch_sees_its_own_pods_from_binding_to_deletion(store: SqliteStore) -> None:
    n1, n2, pods = store.watch("Pod", node="n1"), store.watch("Pod", node="n2"), store.watch("Pod")
    store.create(pod("a"))  # pending: no node's yet
    store.create(pod("b"))
    bind(store, "a", "n1")
    bind(store, "b", "n2")
    running = store.get(Key("Pod", "default", "a"))
    running.pod.status.phase = "Running"
    store.update(running)
    store.delete(Key("Pod", "default", "a"))
    assert seen(n1) == [(EventType.MODIFIED, "a", "n1"), (EventType.MODIFIED, "a", "n1"),
                        (EventType.DELETED, "a", "n1")]
    assert seen(n2) == [(EventType.MODIFIED, "b", "n2")]
    assert len(seen(pods)) == 6  # a watch of all pods still sees every change


def test_a_node_watch_from_a_revision_replays_only_its_node(store: SqliteStore) -> None:
    store.create(pod("a", "n1"))
    store.create(pod("b", "n2"))
    store.create(pod("c", "n1"))
    assert seen(store.watch("Pod", from_revision=0, node="n1")) == [
        (EventType.ADDED, "a", "n1"), (EventType.ADDED, "c", "n1")]


def test_closed_node_watches_leave_the_index(store: SqliteStore) -> None:
    watches = [store.watch("Pod", node="n1"), store.watch("Pod", node="n1"), store.watch("Pod")]
    assert store.watch_count == 3
    for watch in watches:
        watch.close()
    assert store.watch_count == 0
    store.create(pod("a", "n1"))  # nobody left to tell


def test_a_node_watch_is_a_watch_of_pods(store: SqliteStore) -> None:
    for kind in ("Node", ""):
        with pytest.raises(ValueError, match="a watch by node is a watch of pods"):
            store.watch(kind, node="n1")


def event(name: str) -> cluster_pb2.Object:
    obj = cluster_pb2.Object()
    obj.event.metadata.name = name
    obj.event.metadata.namespace = "default"
    obj.event.reason = "Started"
    return obj


def test_a_watch_of_some_kinds_sees_them_in_order_and_nothing_else(store: SqliteStore) -> None:
    live = store.watch(kinds=("Pod", "Node"))
    store.create(pod("a"))
    store.create(event("a.1"))
    node = cluster_pb2.Object()
    node.node.metadata.name = "n1"
    store.create(node)
    store.create(event("a.2"))
    replayed = store.watch(from_revision=0, kinds=("Pod", "Node"))
    for watch in (live, replayed):
        assert [(c.revision, c.object.WhichOneof("kind")) for c in drain(watch)] == [
            (1, "pod"), (3, "node")]


def test_kinds_go_with_a_watch_of_all_kinds(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="a watch of Pod cannot also name kinds Node"):
        store.watch("Pod", kinds=("Node",))
    with pytest.raises(UnknownKind):
        store.watch(kinds=("Gadget",))
