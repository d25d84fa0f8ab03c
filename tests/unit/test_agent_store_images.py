"""The agent's view of the node's image store: what a container start needs of an
image (its config and unpacked layers), kept by manifest digest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.pods.host import StoreImages
from runtime.images import ImageStore
from tests.unit.test_images_store import add_image, tar_of


@pytest.fixture
def store(tmp_dir: Path) -> ImageStore:
    return ImageStore(tmp_dir / "images")


def test_facts_are_read_once_per_image_and_follow_the_name(
        store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    images = StoreImages(store)
    add_image(store, "app:1", [tar_of({"a": b"a"})], {"Cmd": ["one"]})
    first = images.facts("app:1")
    assert first.cmd == ("one",) and len(first.lower) == 1 and first.lower[0].is_dir()
    reads: list[str] = []
    read_blob = store.read_blob
    monkeypatch.setattr(store, "read_blob", lambda d: reads.append(d) or read_blob(d))
    assert images.facts("app:1") is first
    assert reads == []  # neither the manifest nor the config read again
    # The name moved to another image: its own facts, read once.
    add_image(store, "app:1", [tar_of({"b": b"b"})], {"Cmd": ["two"]})
    assert images.facts("app:1").cmd == ("two",)
    assert reads


def test_facts_unpack_layers_again_when_they_are_gone(store: ImageStore) -> None:
    images = StoreImages(store)
    add_image(store, "app:1", [tar_of({"a": b"a"})])
    (layer,) = images.facts("app:1").lower
    shutil.rmtree(layer)  # a prune removed it, a pull brought back only the blobs
    assert images.facts("app:1").lower == (layer,)
    assert (layer / "a").read_bytes() == b"a"
