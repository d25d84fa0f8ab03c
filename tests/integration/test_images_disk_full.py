"""A full disk while an image comes in: a clear error, no partial layer, a store that works.

The store lives on a 4 MiB tmpfs the test mounts. The image is the busybox root
filesystem plus 6 MiB of zeros: its compressed layer (about 1 MiB) fits, its
unpacked layer does not, so import, load and pull all run out of space while
unpacking. Afterwards the store must list cleanly and hold no partial layer; once
the tmpfs is enlarged (``mount -o remount,size=64m``) the same command succeeds.
A layer that does not even download (6 MiB of random bytes) fails in the download,
and the next pull resumes it.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.images import (
    ImageError,
    ImageStore,
    LayerError,
    RegistryError,
    import_rootfs,
    load_archive,
    pull,
    push,
    save_archive,
)
from tests.conftest import need_root
from tests.support.registry import Registry

PODIUM = Path(sys.executable).parent / "podium"
MIB = 1024 * 1024
BIG = ("big/zeros-0.bin", "big/zeros-1.bin")


class SmallDisk:
    """A tmpfs of ``size``, mounted at ``path`` until the test ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def used(self) -> int:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.fixture
def disk(tmp_dir: Path) -> Iterator[SmallDisk]:
    need_root()
    path = tmp_dir / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "podium-test-full",
                    str(path)], check=True)
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", str(path)], check=True)


def rootfs_tarball(busybox_rootfs: Path, dest: Path, fill: Callable[[int], bytes]) -> Path:
    """busybox plus two 3 MiB files of ``fill(n)`` bytes, as a gzip tarball."""
    with tarfile.open(dest, "w:gz", compresslevel=6) as tar:
        tar.add(busybox_rootfs, arcname=".")
        info = tarfile.TarInfo("big")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name in BIG:
            info = tarfile.TarInfo(name)
            info.size, info.mode = 3 * MIB, 0o644
            tar.addfile(info, io.BytesIO(fill(info.size)))
    return dest


@pytest.fixture
def tarball(tmp_dir: Path, busybox_rootfs: Path) -> Path:
    return rootfs_tarball(busybox_rootfs, tmp_dir / "big.tar.gz", bytes)


@pytest.fixture
def big_store(tmp_dir: Path, tarball: Path) -> ImageStore:
    """A store with room to spare, holding the image (the source for save and push)."""
    store = ImageStore(tmp_dir / "big-store")
    import_rootfs(store, tarball, "big:1", {"Cmd": ["sh"]})
    return store


def assert_consistent(store: ImageStore, disk: SmallDisk) -> None:
    """No name, no layer directory (finished or partial), the space given back."""
    assert store.list() == []
    assert list(store.layers_dir.iterdir()) == []
    assert list(store.ingest_dir.iterdir()) == []
    assert disk.used() < 2 * MIB  # at most the compressed blobs, never a partial layer
    ls = subprocess.run([str(PODIUM), "image", "ls", "--store", str(store.root)],
                        capture_output=True, text=True)
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.splitlines()[1:] == []  # the header only


def assert_image(store: ImageStore, name: str) -> None:
    assert [image.familiar for image in store.list()] == [name]
    (top,) = store.lower_dirs(name)
    for big in BIG:
        assert (top / big).stat().st_size == 3 * MIB
    assert (top / "bin/busybox").is_file()
    assert [p.name for p in store.layers_dir.iterdir()] == [top.name]


def test_import_on_a_full_disk(disk: SmallDisk, tarball: Path) -> None:
    store_root = disk.path / "store"
    argv = [str(PODIUM), "image", "import", "--store", str(store_root), str(tarball), "big:1"]
    failed = subprocess.run(argv, capture_output=True, text=True)
    assert failed.returncode != 0
    assert failed.stdout == ""
    message = failed.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"podium: layer {tarball}: unpack failed at ")
    assert f"disk full (ENOSPC) in {store_root / 'layers' / 'sha256'}" in message
    store = ImageStore(store_root)
    assert_consistent(store, disk)

    disk.resize("64m")
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert_image(store, "big:1")


def test_load_on_a_full_disk(disk: SmallDisk, big_store: ImageStore, tmp_dir: Path) -> None:
    archive = tmp_dir / "big.oci.tar"
    save_archive(big_store, ["big:1"], archive)
    store = ImageStore(disk.path / "store")
    with pytest.raises(LayerError, match=r"disk full \(ENOSPC\)"):
        load_archive(store, archive)
    assert_consistent(store, disk)
    assert store.prune().layers == 0  # nothing half-made for prune to find

    disk.resize("64m")
    assert load_archive(store, archive) == ["docker.io/library/big:1"]
    assert_image(store, "big:1")


@pytest.fixture
def registry(tmp_dir: Path) -> Iterator[Registry]:
    reg = Registry(tmp_dir / "registry").start()
    try:
        yield reg
    finally:
        reg.stop()


def test_pull_on_a_full_disk(disk: SmallDisk, big_store: ImageStore,
                             registry: Registry) -> None:
    ref = f"{registry.host}/test/big:1"
    push(big_store, "big:1", ref)
    store = ImageStore(disk.path / "store")
    with pytest.raises(LayerError, match=r"disk full \(ENOSPC\)"):
        pull(store, ref)
    assert_consistent(store, disk)

    disk.resize("64m")
    pull(store, ref)
    assert_image(store, ref)


def test_pull_of_a_layer_larger_than_the_disk_resumes(
    disk: SmallDisk, tmp_dir: Path, busybox_rootfs: Path, registry: Registry
) -> None:
    """Random bytes do not compress: here the download itself runs out of space."""
    rng = random.Random(3)
    tarball = rootfs_tarball(busybox_rootfs, tmp_dir / "random.tar.gz", rng.randbytes)
    source = ImageStore(tmp_dir / "source")
    import_rootfs(source, tarball, "big:1")
    ref = f"{registry.host}/test/random:1"
    push(source, "big:1", ref)
    store = ImageStore(disk.path / "store")
    with pytest.raises(ImageError, match="No space left on device") as caught:
        pull(store, ref)
    assert isinstance(caught.value, RegistryError)
    assert "\n" not in str(caught.value)
    assert store.list() == [] and list(store.layers_dir.iterdir()) == []
    (partial,) = store.ingest_dir.iterdir()  # kept, so the next pull resumes it

    disk.resize("64m")
    pull(store, ref)
    assert not partial.exists()
    assert [image.familiar for image in store.list()] == [ref]
    (top,) = store.lower_dirs(ref)
    assert (top / BIG[0]).stat().st_size == 3 * MIB
