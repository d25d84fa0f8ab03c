"""A layer whose unpack fails on a write (a full disk): a clear error, nothing left behind.

The failure is injected into the file writer, so these run without root and without a
small file system; tests/integration/test_images_disk_full.py fills a real tmpfs.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from runtime.images import ImageStore, LayerError
from runtime.images import unpack as unpack_module
from runtime.images.layers import ensure_layer
from runtime.images.oci import OCI_LAYER_GZIP, Descriptor
from runtime.images.unpack import unpack_layer


def layer_tar() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("etc", "etc/sub"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name in ("etc/first.txt", "etc/sub/second.bin", "third.bin"):
            data = name.encode() * 1000
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def fail_writes(monkeypatch: pytest.MonkeyPatch, code: int, after: int = 1) -> list[str]:
    """Make the writer's ``after``-th file write half its data, then fail with ``code``."""
    real = unpack_module._Writer._write_file
    written: list[str] = []

    def write_file(self: unpack_module._Writer, path: str, member: tarfile.TarInfo,
                   tar: tarfile.TarFile) -> None:
        if len(written) + 1 < after:
            written.append(path)
            real(self, path, member, tar)
            return
        with open(path, "xb") as out:  # a partial file, as a real full disk leaves one
            out.write(b"x" * (member.size // 2))
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(unpack_module._Writer, "_write_file", write_file)
    return written


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, ("disk full (ENOSPC)", "free space there and retry")),
    (errno.EDQUOT, ("disk quota exceeded (EDQUOT)",)),
    (errno.EIO, ("Input/output error",)),
])
def test_a_failed_write_names_the_cause_and_leaves_nothing(
    tmp_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: tuple[str, ...]
) -> None:
    fail_writes(monkeypatch, code, after=2)
    parent = tmp_dir / "layers"
    parent.mkdir()
    with pytest.raises(LayerError) as caught:
        unpack_layer(io.BytesIO(gzip.compress(layer_tar())), parent / "abc", "sha256:abc")
    message = str(caught.value)
    assert message.startswith("layer sha256:abc: unpack failed at 'etc/sub/second.bin': ")
    for word in words:
        assert word in message
    if code != errno.EIO:
        assert str(parent) in message  # where the space ran out
    assert "\n" not in message
    assert list(parent.iterdir()) == []  # neither the layer nor its temporary directory


def test_the_store_unpacks_the_layer_once_space_is_back(
    tmp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ImageStore(tmp_dir / "images")
    tar = layer_tar()
    blob = gzip.compress(tar)
    digest = store.put_blob(blob)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    layer = Descriptor(OCI_LAYER_GZIP, digest, len(blob))
    with monkeypatch.context() as patch:
        fail_writes(patch, errno.ENOSPC)
        with pytest.raises(LayerError, match="ENOSPC"):
            ensure_layer(store, layer, diff_id)
    assert list(store.layers_dir.iterdir()) == []
    assert store.has_blob(digest)  # the verified blob stays for the retry
    path = ensure_layer(store, layer, diff_id)
    assert path == store.layer_path(diff_id)
    assert (path / "etc/sub/second.bin").read_bytes() == b"etc/sub/second.bin" * 1000
    assert [p.name for p in store.layers_dir.iterdir()] == [path.name]
