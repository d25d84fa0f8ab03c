"""The image store on a temporary directory: names, blobs, in-use marks, prune, layers."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from runtime.images import (
    DigestMismatch,
    ImageInUse,
    ImageNotFound,
    ImageStore,
    InvalidReference,
    import_rootfs,
)
from runtime.images.digest import digest_bytes
from runtime.images.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Descriptor, manifest_json


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def add_image(store: ImageStore, name: str, layers: list[bytes],
              config: dict[str, object] | None = None) -> str:
    """Store an image of plain-tar layers by hand; its manifest digest."""
    descriptors = [Descriptor(OCI_LAYER, store.put_blob(data), len(data)) for data in layers]
    config_bytes = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": [digest_bytes(d) for d in layers]},
    }).encode()
    cfg = Descriptor(OCI_CONFIG, store.put_blob(config_bytes), len(config_bytes))
    manifest = manifest_json(cfg, descriptors)
    digest = store.put_blob(manifest)
    store.set_name(name, Descriptor(OCI_MANIFEST, digest, len(manifest)))
    return digest


@pytest.fixture
def store(tmp_dir: Path) -> ImageStore:
    return ImageStore(tmp_dir / "images")


def test_layout_is_an_oci_image_layout(store: ImageStore) -> None:
    add_image(store, "example.test/app:1", [tar_of({"a": b"a"})])
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(store.index_path.read_text())
    [entry] = index["manifests"]
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "example.test/app:1"}
    assert (store.blobs_dir / entry["digest"].split(":")[1]).is_file()


def test_put_blob_verifies_and_stores_nothing_on_mismatch(store: ImageStore) -> None:
    digest = store.put_blob(b"hello")
    assert store.read_blob(digest) == b"hello"
    with pytest.raises(DigestMismatch):
        store.put_blob(b"evil", digest_bytes(b"good"))
    assert not store.has_blob(digest_bytes(b"good"))
    assert list(store.ingest_dir.iterdir()) == []


def test_blob_writer_resumes_a_partial_download(store: ImageStore) -> None:
    data = b"x" * 1000
    digest = digest_bytes(data)
    with pytest.raises(ConnectionError), store.blob_writer(digest) as w:
        w.write(data[:400])
        raise ConnectionError("cut")
    assert not store.has_blob(digest)
    with store.blob_writer(digest) as w:
        assert w.offset == 400 and not w.done
        w.write(data[400:])
        w.commit()
    assert store.read_blob(digest) == data
    with store.blob_writer(digest) as w:
        assert w.done  # a second writer of a stored blob has nothing to do


def test_resolve_tag_and_image_config(store: ImageStore) -> None:
    digest = add_image(store, "busybox", [tar_of({"a": b"a"})], {
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["A=1"],
        "WorkingDir": "/w", "User": "1000:1000", "ExposedPorts": {"80/tcp": {}},
        "Labels": {"team": "x"},
    })
    assert store.resolve("busybox") == digest
    assert store.resolve("docker.io/library/busybox:latest") == digest
    assert store.resolve(digest) == digest
    assert store.resolve(f"anything/else@{digest}") == digest
    cfg = store.image_config("busybox:latest")
    assert (cfg.entrypoint, cfg.cmd, cfg.env) == (["/bin/sh", "-c"], ["echo hi"], ["A=1"])
    assert (cfg.working_dir, cfg.user, cfg.exposed_ports, cfg.labels) == (
        "/w", "1000:1000", ["80/tcp"], {"team": "x"})
    assert store.tag("busybox", "example.test:5000/mine:v2") == "example.test:5000/mine:v2"
    assert store.resolve("example.test:5000/mine:v2") == digest
    assert [(s.familiar, s.digest) for s in store.list()] == [
        ("busybox:latest", digest), ("example.test:5000/mine:v2", digest)]
    with pytest.raises(ImageNotFound, match="nope:latest"):
        store.resolve("nope")
    with pytest.raises(InvalidReference):
        store.resolve("Bad Name")


@pytest.mark.parametrize("torn", [b"", b"\0" * 71, b"sha256:0123", b"[]"])
def test_a_holder_file_torn_by_an_os_crash_holds_nothing(store: ImageStore,
                                                         torn: bytes) -> None:
    # Written without fsync: an OS crash may leave one empty, zeroed or cut short,
    # and the holder it named did not survive the crash.
    digest = add_image(store, "app:1", [tar_of({"a": b"a"})])
    (store.holders_dir / "container-1").write_bytes(torn)
    assert store.holders("app:1") == []
    store.rm("app:1")  # not in use
    add_image(store, "app:1", [tar_of({"a": b"a"})])
    assert store.mark_in_use("app:1", "container-2") == digest
    assert (store.holders_dir / "container-2").read_text() == digest
    assert store.holders("app:1") == ["container-2"]


def test_marking_in_use_neither_syncs_nor_rewrites_what_is_recorded(
        store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    digest = add_image(store, "app:1", [tar_of({"a": b"a"})])
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    assert store.mark_in_use("app:1", "container-1") == digest
    written = (store.holders_dir / "container-1").stat()
    assert store.mark_in_use("app:1", "container-1") == digest  # an adopted container
    assert (store.holders_dir / "container-1").stat().st_ino == written.st_ino  # not replaced
    store.release("container-1")
    store.release("container-1")  # released twice: nothing to do
    assert synced == []
    assert store.holders("app:1") == []
    assert list(store.holders_dir.iterdir()) == []


def test_holders_of_an_image_are_links_to_one_file(store: ImageStore) -> None:
    # A container start adds a name, not an inode (see ImageStore._link_holder).
    digest = add_image(store, "app:1", [tar_of({"a": b"a"})])
    other = add_image(store, "app:2", [tar_of({"b": b"b"})])
    for holder in ("container-1", "container-2"):
        store.mark_in_use("app:1", holder)
    one, two = ((store.holders_dir / h).stat() for h in ("container-1", "container-2"))
    assert one.st_ino == two.st_ino and one.st_nlink == 3  # and held/<hex>
    # An adopted container found holding another image is moved to its file.
    store.mark_in_use("app:2", "container-2")
    assert (store.holders_dir / "container-2").read_text() == other
    assert store.holders("app:1") == ["container-1"]
    assert sorted(p.name for p in store.holders_dir.iterdir()) == ["container-1", "container-2"]
    # A held file an OS crash left torn is written anew; a holder linked to it
    # before held nothing (it did not survive the crash either).
    held = store.held_dir / digest.removeprefix("sha256:")
    held.write_bytes(b"\0" * 71)  # in place: every link to it sees the zeros
    assert store.holders("app:1") == []
    store.mark_in_use("app:1", "container-3")
    assert store.holders("app:1") == ["container-3"]
    assert held.stat().st_ino != one.st_ino
    # Prune drops the held files no holder links to any more.
    for holder in ("container-1", "container-2", "container-3"):
        store.release(holder)
    store.prune()
    assert list(store.held_dir.iterdir()) == []


def test_a_holder_must_be_a_plain_name(store: ImageStore) -> None:
    add_image(store, "app:1", [tar_of({"a": b"a"})])
    for bad in ("", "..", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="not a container ID"):
            store.mark_in_use("app:1", bad)
    assert list(store.holders_dir.iterdir()) == []


def test_holders_of_a_store_from_before_holder_files_are_kept(store: ImageStore) -> None:
    # Such a store kept every holder in one holders.json; opening it moves them.
    digest = add_image(store, "app:1", [tar_of({"a": b"a"})])
    other = add_image(store, "app:2", [tar_of({"b": b"b"})])
    (store.root / "holders.json").write_text(json.dumps(
        {"container-1": digest, "container-2": other, "../bad": digest}))
    reopened = ImageStore(store.root)
    assert not (store.root / "holders.json").exists()
    assert reopened.holders("app:1") == ["container-1"]
    assert reopened.holders("app:2") == ["container-2"]
    with pytest.raises(ImageInUse, match="container-1"):
        reopened.rm("app:1")


def test_rm_refuses_the_last_name_of_an_image_in_use(store: ImageStore) -> None:
    digest = add_image(store, "app:1", [tar_of({"a": b"a"})])
    store.tag("app:1", "app:2")
    assert store.mark_in_use("app:1", "container-1") == digest
    assert ImageStore(store.root).holders("app:2") == ["container-1"]  # shared on disk
    assert store.rm("app:1") == "docker.io/library/app:1"  # another name remains
    with pytest.raises(ImageInUse, match="container-1"):
        store.rm("app:2")
    assert store.resolve("app:2") == digest
    store.release("container-1")
    store.release("container-1")  # releasing twice is harmless
    store.rm("app:2")
    with pytest.raises(ImageNotFound):
        store.rm("app:2")


def test_prune_keeps_named_and_held_images(store: ImageStore) -> None:
    old = add_image(store, "app", [tar_of({"v": b"1"})])
    store.lower_dirs("app")
    store.mark_in_use("app", "c1")
    add_image(store, "app", [tar_of({"v": b"2"})])  # "app" now names another image
    add_image(store, "gone", [tar_of({"g": b"g"})])
    store.lower_dirs("gone")
    store.rm("gone")
    (store.ingest_dir / ("0" * 64)).write_bytes(b"partial")
    report = store.prune()
    assert report.blobs == 3 and report.layers == 1 and report.bytes > 0
    assert list(store.ingest_dir.iterdir()) == []
    assert store.lower_dirs(old)[0].joinpath("v").read_bytes() == b"1"  # held: kept
    assert store.lower_dirs("app")[0].joinpath("v").read_bytes() == b"2"
    store.release("c1")
    report = store.prune()
    assert report.blobs == 3 and report.layers == 1
    assert store.prune().blobs == 0


def test_lower_dirs_top_first_and_shared(store: ImageStore) -> None:
    base, top = tar_of({"f": b"base", "b": b"b"}), tar_of({"f": b"top"})
    add_image(store, "two", [base, top])
    add_image(store, "other", [base])
    dirs = store.lower_dirs("two")
    assert [(d / "f").read_bytes() for d in dirs] == [b"top", b"base"]
    assert dirs[0].name == digest_bytes(top).split(":")[1]
    assert store.lower_dirs("other") == [dirs[1]]  # one directory per layer, shared


def test_concurrent_unpacks_of_one_layer_do_it_once(store: ImageStore) -> None:
    add_image(store, "big", [tar_of({f"f{i}": b"x" * 1000 for i in range(300)})])
    results: list[list[Path]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ImageStore(store.root).lower_dirs("big"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4 and all(r == results[0] for r in results)
    assert [p.name for p in store.layers_dir.iterdir()] == [results[0][0].name]


def test_import_rootfs_and_unsafe_import_stores_nothing(store: ImageStore, tmp_dir: Path) -> None:
    good = tmp_dir / "rootfs.tar"
    good.write_bytes(tar_of({"bin/hello": b"hi"}))
    name = import_rootfs(store, good, "example.test/base:1", config={"Cmd": ["/bin/hello"]})
    assert name == "example.test/base:1"
    assert store.image_config(name).cmd == ["/bin/hello"]
    assert (store.lower_dirs(name)[0] / "bin/hello").read_bytes() == b"hi"

    bad = tmp_dir / "bad.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        tar.addfile(info, io.BytesIO(b""))
    bad.write_bytes(buf.getvalue())
    blobs_before = sorted(store.blobs_dir.iterdir())
    with pytest.raises(Exception, match="escape"):
        import_rootfs(store, bad, "bad")
    assert sorted(store.blobs_dir.iterdir()) == blobs_before
    assert [s.familiar for s in store.list()] == ["example.test/base:1"]
    assert not (tmp_dir / "escape").exists()
