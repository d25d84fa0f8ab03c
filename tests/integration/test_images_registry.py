"""podium's registry client against a real registry, cross-checked with skopeo."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from runtime.images import (
    AuthError,
    Credentials,
    DigestMismatch,
    ImageNotFound,
    ImageStore,
    import_rootfs,
    pull,
    push,
)
from runtime.images.progress import TextProgress
from tests.conftest import need
from tests.support.registry import Registry, make_oci_layout, skopeo


@pytest.fixture
def store(tmp_dir: Path) -> ImageStore:
    return ImageStore(tmp_dir / "images")


def _skopeo_push(busybox_rootfs: Path, tmp_dir: Path, target: str, *extra: str,
                 multi_arch: bool = False) -> str:
    layout = tmp_dir / "layout"
    digest = make_oci_layout(busybox_rootfs, layout, "v1", multi_arch=multi_arch)
    skopeo("copy", "--dest-tls-verify=false", *extra,
           *(["--multi-arch", "all"] if multi_arch else []),
           f"oci:{layout}:v1", f"docker://{target}", workdir=tmp_dir)
    return digest


def test_skopeo_pushes_podium_pulls(
    registry: Registry, store: ImageStore, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    name = f"{registry.host}/test/busybox:1"
    _skopeo_push(busybox_rootfs, tmp_dir, name)
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}",
                               workdir=tmp_dir))
    log = tmp_dir / "progress.txt"
    with open(log, "w") as out:
        assert pull(store, name, progress=TextProgress(out)) == name
    assert store.resolve(name) == remote["Digest"]
    [top] = store.lower_dirs(name)
    assert (top / "bin/busybox").is_file() and os.readlink(top / "bin/sh") == "/bin/busybox"
    assert store.image_config(name).cmd == ["/bin/sh"]
    assert "done" in log.read_text() and "\r" not in log.read_text()  # plain lines
    pull(store, name)  # a second pull finds everything present


def test_pull_resolves_an_index_to_this_platform(
    registry: Registry, store: ImageStore, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    name = f"{registry.host}/test/multi:1"
    manifest = _skopeo_push(busybox_rootfs, tmp_dir, name, multi_arch=True)
    pull(store, name)
    assert store.resolve(name) == manifest
    assert (store.lower_dirs(name)[0] / "bin/busybox").is_file()


def test_podium_pushes_skopeo_inspects_and_copies_back(
    registry: Registry, store: ImageStore, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    tarball = tmp_dir / "rootfs.tar"
    shutil.make_archive(str(tarball.with_suffix("")), "tar", busybox_rootfs)
    import_rootfs(store, tarball, "busybox", config={"Cmd": ["sh"]})
    target = f"{registry.host}/podium/busybox:v2"
    digest = push(store, "busybox", target)
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}",
                               workdir=tmp_dir))
    assert remote["Digest"] == digest
    assert remote["Layers"] == [layer.digest for layer in store.manifest("busybox").layers]
    back = tmp_dir / "back"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{back}:v2",
           workdir=tmp_dir)
    # skopeo may compress a plain layer on the way into a layout: compare contents.
    [entry] = json.loads((back / "index.json").read_text())["manifests"]
    manifest = json.loads(_blob(back, entry["digest"]))
    copied = _blob(back, manifest["layers"][0]["digest"])
    if copied[:2] == b"\x1f\x8b":
        copied = gzip.decompress(copied)
    assert "sha256:" + hashlib.sha256(copied).hexdigest() == \
        store.image_config("busybox").diff_ids[0]
    push(store, "busybox", target)  # pushing again finds every blob present


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()


def test_store_is_an_oci_layout_skopeo_reads(
    store: ImageStore, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    need(shutil.which("skopeo") is not None, "needs Debian's skopeo package")
    tarball = tmp_dir / "rootfs.tar"
    shutil.make_archive(str(tarball.with_suffix("")), "tar", busybox_rootfs)
    name = import_rootfs(store, tarball, "example.test/bb:1")
    info = json.loads(skopeo("inspect", f"oci:{store.root}:{name}", workdir=tmp_dir))
    assert info["Digest"] == store.resolve(name)


def test_digest_mismatch_stores_nothing(
    registry: Registry, store: ImageStore, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    name = f"{registry.host}/test/corrupt:1"
    _skopeo_push(busybox_rootfs, tmp_dir, name)
    layer = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}",
                              workdir=tmp_dir))["Layers"][0]
    data = registry.blob_data(layer)
    corrupted = bytearray(data.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    data.write_bytes(bytes(corrupted))
    with pytest.raises(DigestMismatch, match=layer):
        pull(store, name)
    assert not store.has_blob(layer)
    assert list(store.ingest_dir.iterdir()) == []
    with pytest.raises(ImageNotFound):
        store.resolve(name)


def test_interrupted_pull_resumes_or_restarts(
    registry: Registry, store: ImageStore, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    name = f"{registry.host}/test/resume:1"
    _skopeo_push(busybox_rootfs, tmp_dir, name)
    layer = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}",
                              workdir=tmp_dir))["Layers"][0]
    full = registry.blob_data(layer).read_bytes()
    partial = store.ingest_dir / layer.split(":")[1]
    partial.write_bytes(full[: len(full) // 3])  # as a killed pull leaves it
    pull(store, name)
    assert store.blob_path(layer).read_bytes() == full
    store.rm(name)
    store.prune()
    partial.write_bytes(b"garbage, not a prefix of the blob")
    with pytest.raises(DigestMismatch):
        pull(store, name)
    assert not partial.exists()  # dropped, so the next pull starts over
    pull(store, name)
    assert store.has_blob(layer)


def test_basic_auth(
    auth_registry: Registry, store: ImageStore, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    name = f"{auth_registry.host}/private/busybox:1"
    _skopeo_push(busybox_rootfs, tmp_dir, name, "--dest-creds", "alice:s3cret")
    with pytest.raises(AuthError, match="password"):
        pull(store, name)
    with pytest.raises(AuthError, match="alice"):
        pull(store, name, credentials=Credentials("alice", "wrong"))
    pull(store, name, credentials=Credentials("alice", "s3cret"))
    assert (store.lower_dirs(name)[0] / "bin/busybox").is_file()
    target = f"{auth_registry.host}/private/copy:2"
    digest = push(store, name, target, credentials=Credentials("alice", "s3cret"))
    remote = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", "alice:s3cret",
                               f"docker://{target}", workdir=tmp_dir))
    assert remote["Digest"] == digest
