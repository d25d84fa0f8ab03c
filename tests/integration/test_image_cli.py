"""``podium image …`` end to end: the installed command against a temporary store."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from runtime.images import ImageStore
from tests.conftest import need, need_root
from tests.support.registry import Registry, make_oci_layout, skopeo

PODIUM = Path(sys.executable).parent / "podium"


class Podium:
    """Runs ``podium image …`` on one store, returning the finished process."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def __call__(self, *args: str, ok: bool = True, stdin: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PODIUM_IMAGE_STORE": str(self.store)}
        result = subprocess.run([str(PODIUM), "image", *args], capture_output=True, text=True,
                                env=env, input=stdin, timeout=120)
        if ok and result.returncode != 0:
            raise AssertionError(f"podium image {' '.join(args)} failed: {result.stderr}")
        return result

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """The one-line error of a command that must fail with exit code 1."""
        result = self(*args, ok=False, stdin=stdin)
        assert result.returncode == 1, result
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("podium: "), result.stderr
        assert "Traceback" not in result.stderr
        return lines[0]

    def names(self) -> list[str]:
        return [i.name for i in ImageStore(self.store).list()]


@pytest.fixture
def podium(tmp_dir: Path) -> Podium:
    need_root()
    need(PODIUM.exists(), f"needs {PODIUM}: pip install -e '.[dev]'")
    return Podium(tmp_dir / "images")


@pytest.fixture
def rootfs_tar(busybox_rootfs: Path, tmp_dir: Path) -> Path:
    path = tmp_dir / "busybox.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.add(busybox_rootfs, arcname=".")
    return path


def _nothing_stored(store: Path) -> None:
    """No name, no unpacked (or half-unpacked) layer, no partial download."""
    s = ImageStore(store)
    assert s.list() == []
    assert list(s.layers_dir.iterdir()) == []
    assert list(s.ingest_dir.iterdir()) == []


def test_import_ls_inspect_tag(podium: Podium, rootfs_tar: Path) -> None:
    out = podium("import", "-c", 'CMD ["sh"]', "-c", "ENV GREETING=hi", str(rootfs_tar),
                 "busybox").stdout
    assert out == "docker.io/library/busybox:latest\n"
    table = podium("ls").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repo, tag, image_id = table[1].split()[:3]
    assert (repo, tag, len(image_id)) == ("busybox", "latest", 12)
    info = json.loads(podium("inspect", "busybox").stdout)
    assert info["digest"] == "sha256:" + info["id"] + info["digest"][19:]
    assert info["id"] == image_id and info["names"] == ["docker.io/library/busybox:latest"]
    assert info["config"]["config"]["Cmd"] == ["sh"]
    assert "GREETING=hi" in info["config"]["config"]["Env"]
    assert any(e.startswith("PATH=") for e in info["config"]["config"]["Env"])
    [layer] = info["layers"]
    assert (Path(layer["path"]) / "bin/busybox").is_file()
    assert os.stat(Path(layer["path"]) / "home/user").st_uid == 1000

    podium("tag", "busybox", "example.test/base/busybox:1")
    podium("tag", image_id, "by-id:2")  # an ID works wherever a name does
    assert podium("ls", "-q").stdout == image_id + "\n"  # one line per image, not per name
    rows = json.loads(podium("ls", "--format", "json").stdout)
    assert {(r["repository"], r["tag"]) for r in rows} == {
        ("busybox", "latest"), ("example.test/base/busybox", "1"), ("by-id", "2")}
    assert {r["digest"] for r in rows} == {info["digest"]}
    assert json.loads(podium("inspect", "by-id:2").stdout)["digest"] == info["digest"]


def test_save_load_round_trip(podium: Podium, rootfs_tar: Path, tmp_dir: Path) -> None:
    podium("import", str(rootfs_tar), "busybox:1")
    podium("tag", "busybox:1", "busybox:2")
    digest = json.loads(podium("inspect", "busybox:1").stdout)["digest"]
    archive = tmp_dir / "images.tar"
    assert podium("save", "busybox:1", "busybox:2", str(archive)).stdout == ""
    assert podium("rm", "busybox:1", "busybox:2").stdout.splitlines() == [
        "untagged: docker.io/library/busybox:1", "untagged: docker.io/library/busybox:2"]
    assert "removed 3 blobs" in podium("prune").stdout
    _nothing_stored(podium.store)
    assert podium("load", str(archive)).stdout.splitlines() == [
        "docker.io/library/busybox:1", "docker.io/library/busybox:2"]
    assert json.loads(podium("inspect", "busybox:2").stdout)["digest"] == digest
    assert (Path(json.loads(podium("inspect", "busybox:1").stdout)["layers"][0]["path"])
            / "bin/sh").is_symlink()


def test_rm_refuses_an_image_in_use_and_prune(podium: Podium, rootfs_tar: Path) -> None:
    podium("import", str(rootfs_tar), "busybox")
    store = ImageStore(podium.store)
    store.mark_in_use("busybox", "ctr-1")
    assert "in use by ctr-1" in podium.fails("rm", "busybox")
    image_id = podium("ls", "-q").stdout.strip()
    assert "in use by ctr-1" in podium.fails("rm", image_id)
    assert podium.names() == ["docker.io/library/busybox:latest"]
    assert json.loads(podium("inspect", "busybox").stdout)["usedBy"] == ["ctr-1"]
    # A second name may go: the image keeps a name while the container uses it.
    podium("tag", "busybox", "other")
    podium("rm", "other")
    assert "removed 0 blobs" in podium("prune").stdout
    store.release("ctr-1")
    podium("rm", image_id)
    assert podium("ls", "-q").stdout == ""
    assert "and 1 unpacked layers" in podium("prune").stdout
    assert list(store.blobs_dir.iterdir()) == [] and list(store.layers_dir.iterdir()) == []


def test_bad_input_is_one_line_and_stores_nothing(
    podium: Podium, rootfs_tar: Path, tmp_dir: Path
) -> None:
    assert "invalid image name 'Busy:box'" in podium.fails("import", str(rootfs_tar), "Busy:box")
    assert "No such file or directory" in podium.fails("import", str(tmp_dir / "no.tar"), "x")
    truncated = tmp_dir / "truncated.tar.gz"
    truncated.write_bytes(rootfs_tar.read_bytes()[:-4096])
    assert "not a readable tar or gzip file" in podium.fails("import", str(truncated), "x")
    garbage = tmp_dir / "garbage.tar"
    garbage.write_bytes(os.urandom(3000))
    assert "garbage.tar" in podium.fails("load", str(garbage))
    assert "No such file or directory" in podium.fails("load", str(tmp_dir / "no.tar"))
    _nothing_stored(podium.store)

    # An archive whose layer was changed after it was saved: refused, and no name.
    podium("import", str(rootfs_tar), "busybox")
    archive = tmp_dir / "saved.tar"
    podium("save", "busybox", str(archive))
    podium("rm", "busybox")
    podium("prune")
    corrupt = tmp_dir / "corrupt.tar"
    with tarfile.open(archive) as src, tarfile.open(corrupt, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if data is not None and member.size > 100_000:  # the layer
                body = bytearray(data.read())
                body[len(body) // 2] ^= 0xFF
                dst.addfile(member, io.BytesIO(bytes(body)))
            else:
                dst.addfile(member, data)
    assert "corrupt.tar" in podium.fails("load", str(corrupt))
    _nothing_stored(podium.store)
    assert "not found" in podium.fails("inspect", "busybox")
    assert "not found" in podium.fails("tag", "busybox", "other")


def test_debug_shows_the_traceback(podium: Podium) -> None:
    result = podium("--debug", "inspect", "nothing", ok=False)
    assert result.returncode == 1 and "Traceback" in result.stderr


# --- registries ----------------------------------------------------------------------


def _skopeo_push(rootfs: Path, tmp_dir: Path, target: str, *extra: str) -> str:
    layout = tmp_dir / "layout"
    digest = make_oci_layout(rootfs, layout, "v1")
    skopeo("copy", "--dest-tls-verify=false", *extra, f"oci:{layout}:v1", f"docker://{target}",
           workdir=tmp_dir)
    return digest


def test_pull_and_push_with_a_registry(
    podium: Podium, registry: Registry, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    name = f"{registry.host}/test/busybox:1"
    digest = _skopeo_push(busybox_rootfs, tmp_dir, name)
    result = podium("pull", name)
    # Piped: the result on stdout and no progress at all (progress is for a terminal).
    assert result.stdout == name + "\n"
    assert "pulling" not in result.stderr and "sha256:" not in result.stderr, result.stderr
    assert "\r" not in result.stderr
    info = json.loads(podium("inspect", name).stdout)
    assert info["digest"] == digest
    assert (Path(info["layers"][0]["path"]) / "bin/busybox").is_file()
    again = podium("pull", name)
    assert again.stdout == name + "\n" and "already present" not in again.stderr

    target = f"{registry.host}/copies/busybox:2"
    pushed = podium("push", "-q", name, target)
    assert pushed.stdout.strip() == digest and pushed.stderr == ""
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}",
                               workdir=tmp_dir))
    assert remote["Digest"] == digest

    assert "test/missing" in podium.fails("pull", f"{registry.host}/test/missing:1")
    assert podium.names() == [name]


def test_pull_with_credentials_from_stdin(
    podium: Podium, auth_registry: Registry, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    name = f"{auth_registry.host}/private/busybox:1"
    _skopeo_push(busybox_rootfs, tmp_dir, name, "--dest-creds", "alice:s3cret")
    podium.fails("pull", name)
    podium.fails("pull", "--username", "alice", "--password-stdin", name, stdin="wrong\n")
    assert podium.names() == []
    podium("pull", "-u", "alice", "--password-stdin", name, stdin="s3cret\n")
    assert podium.names() == [name]


def test_import_of_a_gzip_without_the_gzip_suffix(podium: Podium, rootfs_tar: Path,
                                                  tmp_dir: Path) -> None:
    plain = tmp_dir / "rootfs.tar"
    plain.write_bytes(gzip.decompress(rootfs_tar.read_bytes()))
    podium("import", str(plain), "plain")
    podium("import", str(rootfs_tar), "gzipped")
    # Both name the same unpacked layer: it is unpacked once.
    assert len(list(ImageStore(podium.store).layers_dir.iterdir())) == 1
