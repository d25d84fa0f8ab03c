"""import, load (docker save and OCI archives) and save."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from runtime.images import (
    ArchiveError,
    DigestMismatch,
    ImageStore,
    ManifestError,
    host_platform,
    import_rootfs,
    load_archive,
    save_archive,
)
from runtime.images.digest import digest_bytes
from tests.unit.test_images_store import tar_of


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    path.write_bytes(tar_of(files))
    return path


@pytest.fixture
def store(tmp_dir: Path) -> ImageStore:
    return ImageStore(tmp_dir / "images")


def test_save_then_load_round_trip(store: ImageStore, tmp_dir: Path) -> None:
    import_rootfs(store, write_tar(tmp_dir / "r.tar", {"etc/os": b"podium"}), "example.test/a:1",
                  config={"Cmd": ["sh"]})
    store.tag("example.test/a:1", "b")
    archive = tmp_dir / "out.tar"
    save_archive(store, ["example.test/a:1", "b"], archive)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json"} <= names
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] \
        == ["example.test/a:1", "docker.io/library/b:latest"]

    other = ImageStore(tmp_dir / "other")
    assert load_archive(other, archive) == ["example.test/a:1", "docker.io/library/b:latest"]
    assert other.resolve("b") == store.resolve("b")
    assert other.image_config("b").cmd == ["sh"]
    assert (other.lower_dirs("example.test/a:1")[0] / "etc/os").read_bytes() == b"podium"


def _docker_save(path: Path, layers: list[bytes], tags: list[str]) -> Path:
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [digest_bytes(d) for d in layers]},
    }).encode()
    config_name = digest_bytes(config).split(":")[1] + ".json"
    files = {config_name: config}
    layer_names = []
    for i, data in enumerate(layers):
        files[f"layer{i}/layer.tar"] = data
        layer_names.append(f"layer{i}/layer.tar")
    files["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]).encode()
    return write_tar(path, files)


def test_load_docker_save_archive(store: ImageStore, tmp_dir: Path) -> None:
    layers = [tar_of({"hello": b"1"}), tar_of({"hello": b"2"})]
    archive = _docker_save(tmp_dir / "d.tar", layers, ["hello:latest", "example.test/h:2"])
    assert load_archive(store, archive) == ["docker.io/library/hello:latest",
                                            "example.test/h:2"]
    assert store.image_config("hello").cmd == ["/hello"]
    assert [(d / "hello").read_bytes() for d in store.lower_dirs("example.test/h:2")] == [
        b"2", b"1"]


def test_load_docker_archive_with_wrong_diff_ids_names_nothing(
    store: ImageStore, tmp_dir: Path
) -> None:
    archive = _docker_save(tmp_dir / "d.tar", [tar_of({"a": b"a"})], ["x"])
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files["layer0/layer.tar"] = tar_of({"a": b"changed"})
    write_tar(archive, files)
    with pytest.raises(DigestMismatch):
        load_archive(store, archive)
    assert store.list() == []


def _oci_archive(path: Path, ref_name: str, multi_arch: bool = False) -> Path:
    layer = tar_of({"f": b"oci"})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [digest_bytes(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_bytes(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_bytes(layer), "size": len(layer)}],
    }).encode()
    files = {f"blobs/sha256/{digest_bytes(b).split(':')[1]}": b for b in (layer, config, manifest)}
    top: dict[str, object] = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "digest": digest_bytes(manifest), "size": len(manifest)}
    if multi_arch:
        plat = host_platform()
        inner = json.dumps({"schemaVersion": 2, "manifests": [
            {**top, "digest": "sha256:" + "1" * 64, "platform": {"os": "linux",
                                                                "architecture": "s390x-no"}},
            {**top, "platform": {"os": plat.os, "architecture": plat.architecture}},
        ]}).encode()
        files[f"blobs/sha256/{digest_bytes(inner).split(':')[1]}"] = inner
        top = {"mediaType": "application/vnd.oci.image.index.v1+json",
               "digest": digest_bytes(inner), "size": len(inner)}
    top["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    return write_tar(path, files)


def test_load_oci_archive_with_an_index_picks_the_host_platform(
    store: ImageStore, tmp_dir: Path
) -> None:
    archive = _oci_archive(tmp_dir / "o.tar", "example.test/multi:1", multi_arch=True)
    assert load_archive(store, archive) == ["example.test/multi:1"]
    assert (store.lower_dirs("example.test/multi:1")[0] / "f").read_bytes() == b"oci"


def test_load_oci_archive_named_by_a_tag_only_needs_a_name(
    store: ImageStore, tmp_dir: Path
) -> None:
    archive = _oci_archive(tmp_dir / "o.tar", "latest")
    with pytest.raises(ArchiveError, match="give a name"):
        load_archive(store, archive)
    assert load_archive(store, archive, name="mine:3") == ["docker.io/library/mine:3"]


def test_not_an_archive(store: ImageStore, tmp_dir: Path) -> None:
    junk = tmp_dir / "junk"
    junk.write_bytes(b"nothing")
    with pytest.raises(ArchiveError, match="not a tar"):
        load_archive(store, junk)
    with pytest.raises(ArchiveError, match="neither"):
        load_archive(store, write_tar(tmp_dir / "t.tar", {"x": b"x"}))


def test_bad_manifest_is_a_manifest_error(store: ImageStore, tmp_dir: Path) -> None:
    archive = _oci_archive(tmp_dir / "o.tar", "example.test/x:1")
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    index["manifests"][0]["mediaType"] = "application/x-unknown"
    bad = json.dumps({"schemaVersion": 2, "mediaType": "application/x-unknown"}).encode()
    files[f"blobs/sha256/{index['manifests'][0]['digest'].split(':')[1]}"] = bad
    files["index.json"] = json.dumps(index).encode()
    write_tar(archive, files)
    with pytest.raises(ManifestError, match="unknown media type"):
        load_archive(store, archive)
    assert store.list() == []
