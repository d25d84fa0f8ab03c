"""The SQLite store (scheduler/store): CRUD, compare-and-swap, revisions,
lists, watches (replay, live, compaction, overflow, close), reopening and
the errors for bad URLs and bad files."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.podium.v1 import cluster_pb2
from scheduler.objects import Key, UnknownKind, key_of, meta
from scheduler.store import (
    AlreadyExists,
    Change,
    Compacted,
    Conflict,
    EventType,
    NotFound,
    SqliteStore,
    StoreError,
    StoreFileError,
    TooFarBehind,
    open_store,
)
from scheduler.store.base import Store, Watch


def pod(name: str, namespace: str = "default", image: str = "busybox") -> cluster_pb2.Object:
    obj = cluster_pb2.Object()
    obj.pod.metadata.name = name
    obj.pod.metadata.namespace = namespace
    obj.pod.spec.containers.add(name="c", image=image)
    return obj


def node(name: str) -> cluster_pb2.Object:
    obj = cluster_pb2.Object()
    obj.node.metadata.name = name
    return obj


def rv(obj: cluster_pb2.Object) -> str:
    return meta(obj).resource_version


def image(obj: cluster_pb2.Object) -> str:
    return obj.pod.spec.containers[0].image


def drain(watch: Watch, timeout: float = 0.0) -> list[Change]:
    changes = []
    while (change := watch.next(timeout)) is not None:
        changes.append(change)
    return changes


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteStore]:
    path = None if request.param == "memory" else tmp_path / "store.db"
    s = SqliteStore(path)
    yield s
    s.close()


# -- CRUD, compare-and-swap, revisions ---------------------------------------

def test_create_sets_resource_version_and_get_returns_it(store: SqliteStore) -> None:
    given_obj = pod("web")
    created = store.create(given_obj)
    assert rv(created) == "1"
    assert rv(given_obj) == ""  # the caller's message is left alone
    assert store.get(Key("Pod", "default", "web")) == created
    assert store.revision == 1


def test_create_twice_is_already_exists(store: SqliteStore) -> None:
    store.create(pod("web"))
    with pytest.raises(AlreadyExists, match="Pod default/web"):
        store.create(pod("web"))
    assert store.revision == 1


def test_get_missing_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound, match="Pod default/nope"):
        store.get(Key("Pod", "default", "nope"))


def test_get_fills_in_the_key_scope(store: SqliteStore) -> None:
    store.create(pod("web"))
    store.create(node("n1"))
    assert store.get(Key("Pod", "", "web")).pod.metadata.name == "web"
    assert store.get(Key("Node", "default", "n1")).node.metadata.name == "n1"
    with pytest.raises(UnknownKind):
        store.get(Key("Gadget", "", "x"))


def test_returned_objects_are_copies(store: SqliteStore) -> None:
    created = store.create(pod("web"))
    created.pod.spec.containers[0].image = "changed"
    got = store.get(Key("Pod", "default", "web"))
    got.pod.spec.containers[0].image = "changed too"
    assert image(store.get(Key("Pod", "default", "web"))) == "busybox"


def test_update_compares_and_swaps(store: SqliteStore) -> None:
    first = store.create(pod("web"))
    first.pod.spec.containers[0].image = "v2"
    second = store.update(first)
    assert rv(second) == "2"
    stale = pod("web", image="v3")
    meta(stale).resource_version = "1"
    with pytest.raises(Conflict, match="Pod default/web"):
        store.update(stale)
    assert image(store.get(key_of(stale))) == "v2"
    assert store.revision == 2
    # An empty resource_version replaces unconditionally.
    third = store.update(pod("web", image="v4"))
    assert (rv(third), image(third)) == ("3", "v4")


def test_update_missing_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound, match="Pod default/web"):
        store.update(pod("web"))
    assert store.revision == 0


def test_delete_returns_the_last_state_and_compares_and_swaps(store: SqliteStore) -> None:
    created = store.create(pod("web"))
    key = key_of(created)
    with pytest.raises(Conflict, match="Pod default/web"):
        store.delete(key, resource_version="99")
    deleted = store.delete(key, resource_version=rv(created))
    assert deleted == created
    assert store.revision == 2
    with pytest.raises(NotFound, match="Pod default/web"):
        store.get(key)
    with pytest.raises(NotFound, match="Pod default/web"):
        store.delete(key)
    # The name is free again.
    assert rv(store.create(pod("web"))) == "3"


def test_every_write_bumps_the_revision_by_one(store: SqliteStore) -> None:
    store.create(pod("a"))
    store.create(node("n"))
    store.update(pod("a", image="x"))
    store.delete(Key("Node", "", "n"))
    assert store.revision == 4
    assert rv(store.get(Key("Pod", "default", "a"))) == "3"


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    watch = store.watch()
    store.create(pod("a"))
    # A connection that refuses writes stands in for a failing disk.
    store._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreFileError, match=f"{tmp_path}/s.db: cannot write Pod default/b"):
        store.create(pod("b"))
    assert store.revision == 1
    with pytest.raises(NotFound):
        store.get(Key("Pod", "default", "b"))
    assert [c.revision for c in drain(watch)] == [1]
    store._conn.execute("PRAGMA query_only = OFF")
    assert rv(store.create(pod("b"))) == "2"
    store.close()


# -- lists ----------------------------------------------------------------------

def test_list_sorts_by_namespace_then_name(store: SqliteStore) -> None:
    for ns, name in [("b", "x"), ("a", "z"), ("b", "a"), ("a", "b")]:
        store.create(pod(name, ns))
    store.create(node("n1"))
    items, revision = store.list("Pod")
    assert [(meta(o).namespace, meta(o).name) for o in items] == [
        ("a", "b"), ("a", "z"), ("b", "a"), ("b", "x")]
    assert revision == 5
    items, _ = store.list("Pod", "b")
    assert [meta(o).name for o in items] == ["a", "x"]
    assert store.list("Pod", "nowhere") == ([], 5)
    assert store.list("Deployment") == ([], 5)


def test_list_of_cluster_scoped_kinds_ignores_the_namespace(store: SqliteStore) -> None:
    store.create(node("n2"))
    store.create(node("n1"))
    items, _ = store.list("Node", "default")
    assert [meta(o).name for o in items] == ["n1", "n2"]


def test_list_unknown_kind_is_an_error(store: SqliteStore) -> None:
    with pytest.raises(UnknownKind, match="Gadget"):
        store.list("Gadget")


def test_list_revision_matches_its_items_under_concurrent_writes(store: SqliteStore) -> None:
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            store.create(pod(f"p{i}"))
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(50):
            items, revision = store.list("Pod")
            # Only creates: revision r holds exactly r pods, the newest at r.
            assert len(items) == revision
            if items:
                assert max(int(rv(o)) for o in items) == revision
    finally:
        stop.set()
        writer.join()


# -- watches ----------------------------------------------------------------------

def test_watch_from_now_sees_only_later_changes(store: SqliteStore) -> None:
    store.create(pod("before"))
    watch = store.watch()
    assert watch.next(0) is None
    store.create(pod("web"))
    store.update(pod("web", image="v2"))
    store.delete(Key("Pod", "default", "web"))
    changes = drain(watch)
    assert [(c.type, c.revision) for c in changes] == [
        (EventType.ADDED, 2), (EventType.MODIFIED, 3), (EventType.DELETED, 4)]
    # DELETED carries the object as last stored.
    assert rv(changes[2].object) == "3" and image(changes[2].object) == "v2"
    watch.close()


def test_watch_filters_by_kind_and_namespace(store: SqliteStore) -> None:
    pods_in_a = store.watch("Pod", "a")
    nodes = store.watch("Node", "ignored")
    everything_in_b = store.watch("", "b")
    store.create(pod("x", "a"))
    store.create(pod("y", "b"))
    store.create(node("n"))
    assert [c.revision for c in drain(pods_in_a)] == [1]
    assert [c.revision for c in drain(nodes)] == [3]
    assert [c.revision for c in drain(everything_in_b)] == [2]
    with pytest.raises(UnknownKind):
        store.watch("Gadget")
    with pytest.raises(ValueError, match="-1"):
        store.watch(from_revision=-1)


def test_watch_replays_history_then_follows_live(store: SqliteStore) -> None:
    for i in range(5):
        store.create(pod(f"p{i}"))
    store.create(pod("other", "elsewhere"))
    watch = store.watch("Pod", "default", from_revision=2)
    store.create(pod("p5"))
    changes = drain(watch)
    assert [c.revision for c in changes] == [3, 4, 5, 7]
    assert [meta(c.object).name for c in changes] == ["p2", "p3", "p4", "p5"]
    assert all(rv(c.object) == str(c.revision) for c in changes)


def test_watch_from_a_future_revision_starts_after_it(store: SqliteStore) -> None:
    store.create(pod("a"))
    watch = store.watch(from_revision=3)
    for name in "bcde":
        store.create(pod(name))
    assert [c.revision for c in drain(watch)] == [4, 5]


def test_each_watcher_gets_its_own_copy(store: SqliteStore) -> None:
    first, second = store.watch(), store.watch()
    store.create(pod("web"))
    one = first.next(1)
    assert one is not None
    one.object.pod.metadata.name = "mangled"
    two = second.next(1)
    assert two is not None and two.object.pod.metadata.name == "web"


def test_watch_has_no_gaps_or_duplicates_under_concurrent_writers(store: SqliteStore) -> None:
    writers, per_writer = 4, 150
    live = store.watch("Pod")
    started = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        started.wait()
        for i in range(per_writer):
            created = store.create(pod(f"w{w}-{i}"))
            if i % 3 == 0:
                store.update(created)
            if i % 5 == 0:
                store.delete(key_of(created))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    started.wait()
    while store.revision == 0:
        time.sleep(0.001)
    # Watches joining mid-stream, replaying from the revision they read.
    late = []
    for _ in range(5):
        revision = store.revision
        late.append((revision, store.watch("Pod", from_revision=revision)))
    for t in threads:
        t.join()
    final = store.revision
    assert final == writers * (per_writer + len(range(0, per_writer, 3))
                               + len(range(0, per_writer, 5)))
    assert [c.revision for c in drain(live)] == list(range(1, final + 1))
    for revision, watch in late:
        assert [c.revision for c in drain(watch)] == list(range(revision + 1, final + 1))


def test_old_revisions_are_compacted(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path, history=5) as store:
        for i in range(20):
            store.create(pod(f"p{i}"))
        with pytest.raises(Compacted, match="revision 1 "):
            store.watch(from_revision=1)
        watch = store.watch(from_revision=15)
        assert [c.revision for c in drain(watch)] == [16, 17, 18, 19, 20]
    with SqliteStore(path, history=5) as store:
        with pytest.raises(Compacted):
            store.watch(from_revision=10)
        assert len(drain(store.watch(from_revision=16))) == 4


def test_history_on_disk_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore(path, history=100) as store:
        for i in range(1000):
            store.create(pod(f"p{i}"))
    conn = sqlite3.connect(path)
    try:
        (rows,) = conn.execute("SELECT count(*) FROM history").fetchone()
    finally:
        conn.close()
    assert 100 <= rows <= 100 + 100 // 8


def test_a_watcher_that_falls_behind_is_dropped(store: SqliteStore) -> None:
    small = SqliteStore(None, watch_buffer=3)
    try:
        slow = small.watch()
        fine = small.watch()
        for i in range(3):
            small.create(pod(f"p{i}"))
        assert len(drain(fine)) == 3
        small.create(pod("p3"))  # the slow one overflows; the writer does not wait
        with pytest.raises(TooFarBehind, match="list again"):
            slow.next(0)
        with pytest.raises(TooFarBehind):
            list(slow)
        assert [c.revision for c in drain(fine)] == [4]
        assert small._hub.count() == 1
    finally:
        small.close()


def test_replayed_history_does_not_count_against_the_buffer() -> None:
    with SqliteStore(None, watch_buffer=2) as store:
        for i in range(10):
            store.create(pod(f"p{i}"))
        watch = store.watch(from_revision=1)
        store.create(pod("live"))
        assert [c.revision for c in drain(watch)] == list(range(2, 12))


def test_close_unblocks_a_waiting_iteration(store: SqliteStore) -> None:
    watch = store.watch()
    seen: list[Change] = []
    reader = threading.Thread(target=lambda: seen.extend(watch))
    reader.start()
    store.create(pod("web"))
    watch.close()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert [c.revision for c in seen] in ([], [1])
    assert watch.next(0) is None
    watch.close()  # idempotent


def test_closing_the_store_ends_its_watches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    watch = store.watch()
    reader = threading.Thread(target=lambda: list(watch))
    reader.start()
    store.close()
    reader.join(timeout=10)
    assert not reader.is_alive()


def test_next_times_out_with_none(store: SqliteStore) -> None:
    assert store.watch().next(timeout=0.01) is None


# -- opening, reopening, closing -------------------------------------------------

def test_reopen_keeps_objects_revision_and_history(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "store.db"
    with SqliteStore(path) as store:
        store.create(pod("a"))
        store.create(pod("b"))
        store.update(pod("a", image="v2"))
        store.delete(Key("Pod", "default", "b"))
        store.create(node("n1"))
    with SqliteStore(path) as store:
        assert store.revision == 5
        items, revision = store.list("Pod")
        assert revision == 5
        assert [(meta(o).name, rv(o), image(o)) for o in items] == [("a", "3", "v2")]
        assert rv(store.get(Key("Node", "", "n1"))) == "5"
        assert [c.type for c in drain(store.watch(from_revision=2))] == [
            EventType.MODIFIED, EventType.DELETED, EventType.ADDED]
        assert rv(store.create(pod("c"))) == "6"


def test_close_is_idempotent_and_later_calls_fail(store: SqliteStore) -> None:
    store.create(pod("a"))
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get(Key("Pod", "default", "a"))
    with pytest.raises(StoreError, match="closed"):
        store.create(pod("b"))
    with pytest.raises(StoreError, match="closed"):
        store.watch()


def test_open_store_urls(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "s.db"
    first: Store = open_store(f"sqlite://{target}")
    first.create(pod("a"))
    first.close()
    assert (target.parent.stat().st_mode & 0o777) == 0o700
    assert (target.stat().st_mode & 0o777) == 0o600
    again = open_store(str(target))
    assert again.revision == 1
    again.close()
    memory = open_store("memory")
    assert memory.revision == 0
    memory.close()


@pytest.mark.parametrize("url", ["etcd://host:2379", "sqlite://relative.db", "", "http://x/y"])
def test_open_store_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        open_store(url)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not sqlite at all\n" * 100)
    with pytest.raises(StoreFileError, match=f"{path}: not a podium store"):
        SqliteStore(path)
    assert path.read_text().startswith("hello")


def test_another_programs_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreFileError, match=f"{path}: not a podium store"):
        SqliteStore(path)
    assert path.read_bytes() == before


def test_a_store_from_a_newer_podium(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreFileError, match=f"{path}: store schema 99 is newer"):
        SqliteStore(path)


def test_a_store_in_use_cannot_be_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path):
        with pytest.raises(StoreFileError, match=f"{path}: in use"):
            SqliteStore(path)
    SqliteStore(path).close()


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreFileError, match=f"{tmp_path}: is a directory"):
        SqliteStore(tmp_path)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="history"):
        SqliteStore(None, history=0)
    with pytest.raises(ValueError, match="watch buffer"):
        SqliteStore(None, watch_buffer=0)


# -- a random sequence of operations against a dict ------------------------------

_names = st.sampled_from(["a", "b", "c"])
_namespaces = st.sampled_from(["default", "kube"])
_ops = st.lists(st.tuples(
    st.sampled_from(["create", "update", "update_cas", "update_stale", "delete",
                     "delete_cas", "delete_stale"]),
    _namespaces, _names, st.integers(0, 9)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_operations_match_a_dict_model(ops: list[tuple[str, str, str, int]]) -> None:
    model: dict[Key, tuple[str, int]] = {}  # key -> (image, revision)
    revision = 0
    with SqliteStore(None, history=8) as store:
        watch = store.watch()
        for op, ns, name, n in ops:
            key = Key("Pod", ns, name)
            obj = pod(name, ns, image=f"i{n}")
            current = model.get(key)
            try:
                if op == "create":
                    result = store.create(obj)
                elif op.startswith("update"):
                    if op == "update_cas" and current:
                        meta(obj).resource_version = str(current[1])
                    elif op == "update_stale":
                        meta(obj).resource_version = "1000"
                    result = store.update(obj)
                else:
                    wanted = ""
                    if op == "delete_cas" and current:
                        wanted = str(current[1])
                    elif op == "delete_stale":
                        wanted = "1000"
                    result = store.delete(key, wanted)
            except AlreadyExists:
                assert op == "create" and current is not None
                continue
            except NotFound:
                assert op != "create" and current is None
                continue
            except Conflict:
                assert op.endswith("stale") and current is not None
                continue
            assert not op.endswith("stale")
            revision += 1
            if op.startswith("delete"):
                assert current is not None
                assert rv(result) == str(current[1]) and image(result) == current[0]
                del model[key]
            else:
                assert op == "create" or current is not None
                assert rv(result) == str(revision)
                model[key] = (f"i{n}", revision)
        assert store.revision == revision
        items, at = store.list("Pod")
        assert at == revision
        assert [(key_of(o), image(o), int(rv(o))) for o in items] == [
            (k, img, r) for k, (img, r) in sorted(model.items(), key=lambda kv: kv[0][1:])]
        assert [c.revision for c in drain(watch)] == list(range(1, revision + 1))
        # History keeps the last 8 revisions, and replays them in order.
        for after in range(1, revision + 1):
            if after < revision - 8:
                with pytest.raises(Compacted):
                    store.watch(from_revision=after)
            else:
                replayed = drain(store.watch(from_revision=after))
                assert [c.revision for c in replayed] == list(range(after + 1, revision + 1))


def _pod_object(name: str) -> cluster_pb2.Object:
    obj = cluster_pb2.Object()
    obj.pod.metadata.name = name
    obj.pod.metadata.namespace = "default"
    return obj


def test_batch_commits_once_and_tells_watchers_after(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "b.db") as store:
        watch = store.watch("Pod")
        with store.batch():
            a = store.create(_pod_object("a"))
            store.create(_pod_object("b"))
            a.pod.spec.node_name = "n1"
            store.update(a)  # sees the block's own write
            assert watch.next(timeout=0) is None  # nothing told before the commit
        told = [watch.next(timeout=1) for _ in range(3)]
        assert [c.type for c in told if c] == ["ADDED", "ADDED", "MODIFIED"]
        watch.close()
    with SqliteStore(tmp_path / "b.db") as reopened:
        assert reopened.get(Key("Pod", "default", "a")).pod.spec.node_name == "n1"
        assert reopened.revision == 3


def test_an_exception_leaving_a_batch_undoes_it(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "b.db") as store:
        store.create(_pod_object("kept"))
        with pytest.raises(RuntimeError), store.batch():
            store.create(_pod_object("lost"))
            with store.batch():  # nested blocks belong to the outer one
                store.create(_pod_object("lost-too"))
            raise RuntimeError("caller gave up")
        names = [o.pod.metadata.name for o in store.list("Pod")[0]]
        assert names == ["kept"] and store.revision == 1
        store.create(_pod_object("after"))
        assert store.revision == 2
