"""agent.sources: the static manifest directory as a pod source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sources import PodEvent, PodEventType, PodSource, StaticManifestSource, static_pod_uid

ADD, UPDATE, REMOVE, ERROR = (
    PodEventType.ADD,
    PodEventType.UPDATE,
    PodEventType.REMOVE,
    PodEventType.ERROR,
)


def pod_yaml(name: str, image: str = "busybox:1.36", namespace: str | None = None) -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}{ns}\n"
        f"spec:\n  containers:\n  - name: main\n    image: {image}\n"
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(tmp_path: Path, clock: FakeClock) -> StaticManifestSource:
    return StaticManifestSource(tmp_path, poll_interval=1.0, clock=clock)


def summary(events: list[PodEvent]) -> list[tuple[PodEventType, str]]:
    return [
        (e.type, e.pod.metadata.name if e.pod is not None else Path(e.source).name) for e in events
    ]


def write(path: Path, text: str) -> None:
    # Write beside and rename, as editors and `kubectl`-style tools do, so
    # every change is a new inode even within one timestamp tick.
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_static_source_is_a_pod_source(source: StaticManifestSource) -> None:
    assert isinstance(source, StaticManifestSource)
    as_source: PodSource = source
    assert as_source.poll() == []


def test_add_change_remove(tmp_path: Path, source: StaticManifestSource, clock: FakeClock) -> None:
    write(tmp_path / "web.yaml", pod_yaml("web"))
    (event,) = source.poll()
    assert event.type == ADD and event.source == str(tmp_path / "web.yaml")
    assert event.pod is not None
    assert event.pod.metadata.namespace == "default"
    assert event.pod.spec.containers[0].image == "busybox:1.36"

    # Nothing changed: no events, also after the interval.
    clock.now += 1
    assert source.poll() == []

    write(tmp_path / "web.yaml", pod_yaml("web", image="busybox:1.37"))
    assert source.poll() == []  # not yet due
    clock.now += 1
    (event,) = source.poll()
    assert event.type == UPDATE and event.pod is not None
    assert event.pod.spec.containers[0].image == "busybox:1.37"

    # Same content written again: no event.
    write(tmp_path / "web.yaml", pod_yaml("web", image="busybox:1.37"))
    clock.now += 1
    assert source.poll() == []

    (tmp_path / "web.yaml").unlink()
    clock.now += 1
    (event,) = source.poll()
    assert event.type == REMOVE and event.pod is not None and event.pod.metadata.name == "web"
    assert source.pods() == []


def test_renaming_a_pod_in_its_file_removes_the_old_one(
    tmp_path: Path, source: StaticManifestSource
) -> None:
    write(tmp_path / "web.yaml", pod_yaml("web"))
    source.scan()
    write(tmp_path / "web.yaml", pod_yaml("web2"))
    assert summary(source.scan()) == [(REMOVE, "web"), (ADD, "web2")]


def test_several_pods_in_one_file_and_other_files_ignored(
    tmp_path: Path, source: StaticManifestSource
) -> None:
    write(tmp_path / "pods.yml", pod_yaml("a") + "---\n" + pod_yaml("b", namespace="shop"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / ".web.yaml.swp").write_text("editor junk")
    events = source.scan()
    assert summary(events) == [(ADD, "a"), (ADD, "b")]
    assert events[1].pod is not None and events[1].pod.metadata.namespace == "shop"


def test_bad_file_is_an_error_and_leaves_other_pods_alone(
    tmp_path: Path, source: StaticManifestSource
) -> None:
    write(tmp_path / "good.yaml", pod_yaml("good"))
    write(tmp_path / "web.yaml", pod_yaml("web"))
    assert summary(source.scan()) == [(ADD, "good"), (ADD, "web")]

    # A typo in web.yaml: one error naming file, document and field; the
    # running web pod is kept as it was, good.yaml is untouched.
    write(tmp_path / "web.yaml", pod_yaml("web").replace("    image:", "    imagee:"))
    (event,) = source.scan()
    assert event.type == ERROR and event.pod is None
    assert event.message.startswith(
        "web.yaml, document 1: spec.containers[0].imagee: unknown field"
    )
    assert source.scan() == []  # reported once
    assert sorted(p.metadata.name for p in source.pods()) == ["good", "web"]

    # Fixed: an update, since the pod is what it was before the typo.
    write(tmp_path / "web.yaml", pod_yaml("web", image="busybox:1.37"))
    assert summary(source.scan()) == [(UPDATE, "web")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Pod\nmetadata: [\n", "bad.yaml, line 3, column 1: "),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            "bad.yaml, document 1: kind Deployment: a static manifest holds Pods only",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
            'bad.yaml, document 1: kind "ConfigMap" of apiVersion "v1" is not supported',
        ),
        (
            "apiVersion: v1\nkind: Pod\nspec: {containers: [{name: a, image: b}]}\n",
            "bad.yaml, document 1: metadata.name is missing",
        ),
        (pod_yaml("a") + "---\n" + pod_yaml("a"), "bad.yaml, document 2: pod default/a is defined"),
    ],
)
def test_bad_files(tmp_path: Path, source: StaticManifestSource, text: str, expected: str) -> None:
    write(tmp_path / "bad.yaml", text)
    (event,) = source.scan()
    assert event.type == ERROR and event.message.startswith(expected), event.message
    # Removing a file that never gave a pod says nothing.
    (tmp_path / "bad.yaml").unlink()
    assert source.scan() == []


def test_same_pod_in_two_files_first_file_wins_until_it_lets_go(
    tmp_path: Path, source: StaticManifestSource
) -> None:
    write(tmp_path / "b.yaml", pod_yaml("web"))
    assert summary(source.scan()) == [(ADD, "web")]
    write(tmp_path / "a.yaml", pod_yaml("web", image="other"))
    (event,) = source.scan()
    assert event.type == ERROR and "already defined in" in event.message
    # b.yaml gives the pod up: a.yaml's copy takes over in the same scan
    # (removals first), though a.yaml did not change.
    (tmp_path / "b.yaml").unlink()
    events = source.scan()
    assert summary(events) == [(REMOVE, "web"), (ADD, "web")]
    assert events[1].pod is not None and events[1].pod.spec.containers[0].image == "other"
    assert events[1].source == str(tmp_path / "a.yaml")


def test_uids_are_stable_across_agent_restarts(tmp_path: Path, clock: FakeClock) -> None:
    write(tmp_path / "web.yaml", pod_yaml("web"))
    write(tmp_path / "db.json", '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db"}}')
    first = {
        e.pod.metadata.name: e.pod.metadata.uid
        for e in StaticManifestSource(tmp_path, clock=clock).poll()
        if e.pod
    }
    again = {
        e.pod.metadata.name: e.pod.metadata.uid
        for e in StaticManifestSource(tmp_path, clock=clock).poll()
        if e.pod
    }
    assert first == again and len(set(first.values())) == 2
    assert first["web"] == static_pod_uid(str(tmp_path / "web.yaml"), "default", "web")
    # Another file or another name is another pod.
    assert static_pod_uid(str(tmp_path / "x.yaml"), "default", "web") != first["web"]
    assert static_pod_uid(str(tmp_path / "web.yaml"), "default", "web2") != first["web"]
    # A uid written in the manifest does not override the derived one.
    write(tmp_path / "web.yaml", pod_yaml("web").replace("name: web", "name: web\n  uid: mine"))
    source = StaticManifestSource(tmp_path, clock=clock)
    uids = {e.pod.metadata.name: e.pod.metadata.uid for e in source.poll() if e.pod}
    assert uids["web"] == first["web"]


def test_warnings_travel_with_the_pod(tmp_path: Path, source: StaticManifestSource) -> None:
    text = pod_yaml("web").replace("spec:\n", "spec:\n  serviceAccountName: web\n")
    write(tmp_path / "web.yaml", text)
    (event,) = source.scan()
    assert event.type == ADD
    assert event.warnings == (
        "web.yaml, document 1: spec.serviceAccountName: not supported by podium, ignored (line 6)",
    )


def test_missing_directory_is_reported_once_and_removes_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    directory = tmp_path / "manifests"
    directory.mkdir()
    write(directory / "web.yaml", pod_yaml("web"))
    source = StaticManifestSource(directory, clock=clock)
    assert summary(source.scan()) == [(ADD, "web")]
    (directory / "web.yaml").rename(tmp_path / "web.yaml")
    directory.rmdir()
    (event,) = source.scan()
    assert event.type == ERROR and "No such file or directory" in event.message
    assert source.scan() == []
    assert [p.metadata.name for p in source.pods()] == ["web"]
