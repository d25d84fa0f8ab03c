"""Layer unpacking: metadata kept, whiteouts converted, nothing written outside."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from runtime.images import DigestMismatch, LayerError, UnsafeLayer
from runtime.images.unpack import OPAQUE_XATTR, classify_whiteout, clean_name, unpack_layer
from tests.conftest import need, need_root

Entry = tarfile.TarInfo


def entry(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tuple[Entry, bytes]:
    data = fields.pop("data", b"")
    assert isinstance(data, bytes)
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def make_tar(*entries: tuple[Entry, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def unpack(data: bytes, dest: Path, expected: str | None = None) -> str:
    return unpack_layer(io.BytesIO(data), dest, "test-layer", expected).diff_id


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_files_dirs_links_modes_times(tmp_dir: Path) -> None:
    data = make_tar(
        entry("./", tarfile.DIRTYPE, mode=0o755),
        entry("bin", tarfile.DIRTYPE),
        entry("bin/busybox", data=b"\x7fELF", mode=0o4755),
        entry("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox"),
        entry("bin/ls", tarfile.LNKTYPE, linkname="bin/busybox"),
        entry("etc/motd", data=b"hello\n", mode=0o600),  # parent made implicitly
        entry("ro", tarfile.DIRTYPE, mode=0o555),
        entry("ro/inside", data=b"x"),
        entry("fifo", tarfile.FIFOTYPE, mode=0o640),
    )
    dest = tmp_dir / "layer"
    assert unpack(data, dest) == sha(data)
    assert (dest / "bin/busybox").read_bytes() == b"\x7fELF"
    assert stat.S_IMODE((dest / "bin/busybox").stat().st_mode) == 0o4755
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert (dest / "bin/ls").stat().st_ino == (dest / "bin/busybox").stat().st_ino
    assert stat.S_IMODE((dest / "etc/motd").stat().st_mode) == 0o600
    assert (dest / "etc/motd").stat().st_mtime == 1_600_000_000
    assert stat.S_IMODE((dest / "ro").stat().st_mode) == 0o555
    assert (dest / "ro").stat().st_mtime == 1_600_000_000  # set after its children
    assert (dest / "ro/inside").read_bytes() == b"x"
    assert stat.S_ISFIFO((dest / "fifo").stat().st_mode)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_gzip_gives_the_same_diff_id(tmp_dir: Path) -> None:
    data = make_tar(entry("a", data=b"a"))
    assert unpack(gzip.compress(data), tmp_dir / "l", expected=sha(data)) == sha(data)


def test_later_entry_replaces_earlier_without_following_links(tmp_dir: Path) -> None:
    outside = tmp_dir / "outside"
    outside.write_text("keep")
    data = make_tar(
        entry("x", tarfile.SYMTYPE, linkname=str(outside)),
        entry("x", data=b"new"),
        entry("d", data=b"file first"),
        entry("d", tarfile.DIRTYPE),
        entry("d/f", data=b"f"),
    )
    dest = tmp_dir / "layer"
    unpack(data, dest)
    assert (dest / "x").read_bytes() == b"new" and not (dest / "x").is_symlink()
    assert outside.read_text() == "keep"
    assert (dest / "d/f").read_bytes() == b"f"


def test_xattrs_are_kept(tmp_dir: Path) -> None:
    info, body = entry("f", data=b"x")
    info.pax_headers = {"SCHILY.xattr.user.podium": "yes"}
    dest = tmp_dir / "layer"
    try:
        os.setxattr(tmp_dir, "user.probe", b"1")
        takes_xattrs = True
    except OSError:
        takes_xattrs = False
    need(takes_xattrs, "the temporary file system takes no user xattrs")
    unpack(make_tar((info, body)), dest)
    assert os.getxattr(dest / "f", "user.podium") == b"yes"


def test_owners_and_device_nodes_as_root(tmp_dir: Path) -> None:
    need_root()
    dest = tmp_dir / "layer"
    unpack(make_tar(
        entry("home/user", tarfile.DIRTYPE, uid=1000, gid=1000),
        entry("home/user/f", data=b"x", uid=1000, gid=100, mode=0o2755),
        entry("link", tarfile.SYMTYPE, linkname="nowhere", uid=7, gid=8),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/loop9", tarfile.BLKTYPE, devmajor=7, devminor=9, mode=0o660),
    ), dest)
    st = (dest / "home/user/f").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 100, 0o2755)
    assert (dest / "home/user").stat().st_uid == 1000
    assert os.lstat(dest / "link").st_uid == 7
    null = (dest / "dev/null").stat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert os.minor(null.st_rdev) == 3
    assert stat.S_ISBLK((dest / "dev/loop9").stat().st_mode)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("etc/.wh.passwd", ("whiteout", "etc/passwd")),
        (".wh.top", ("whiteout", "top")),
        ("var/cache/.wh..wh..opq", ("opaque", "var/cache")),
        (".wh..wh..opq", ("opaque", "")),
        ("a/.wh..wh.plnk", ("meta", "a")),
        ("a/.wh.", ("bad", "a/.wh.")),
        ("etc/passwd", None),
        ("etc/x.wh.y", None),
    ],
)
def test_classify_whiteouts(name: str, expected: tuple[str, str] | None) -> None:
    assert classify_whiteout(name) == expected


def test_whiteouts_become_overlay_form(tmp_dir: Path) -> None:
    need_root()
    dest = tmp_dir / "layer"
    unpack(make_tar(
        entry("etc", tarfile.DIRTYPE),
        entry("etc/.wh.passwd"),
        entry("var/cache", tarfile.DIRTYPE),
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/new", data=b"n"),
        entry("gone/.wh..wh..opq"),  # opaque with no entry for its directory
    ), dest)
    white = os.lstat(dest / "etc/passwd")
    assert stat.S_ISCHR(white.st_mode) and white.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.passwd").exists()
    assert os.getxattr(dest / "var/cache", OPAQUE_XATTR, follow_symlinks=False) == b"y"
    assert not (dest / "var/cache/.wh..wh..opq").exists()
    assert (dest / "var/cache/new").read_bytes() == b"n"
    assert os.getxattr(dest / "gone", OPAQUE_XATTR) == b"y"


def _snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        out[str(path)] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return out


MALICIOUS = {
    "dotdot": [entry("../evil", data=b"pwned")],
    "dotdot-deep": [entry("a/b/../../../evil", data=b"pwned")],
    "absolute": [entry("/tmp/evil", data=b"pwned")],
    "symlink-dir-absolute": [entry("link", tarfile.SYMTYPE, linkname="{outside}"),
                             entry("link/evil", data=b"pwned")],
    "symlink-dir-relative": [entry("link", tarfile.SYMTYPE, linkname="../outside"),
                             entry("link/evil", data=b"pwned")],
    "symlink-then-dir": [entry("link", tarfile.SYMTYPE, linkname="{outside}"),
                         entry("link/sub", tarfile.DIRTYPE)],
    "symlink-inside-then-file": [entry("real", tarfile.DIRTYPE),
                                 entry("alias", tarfile.SYMTYPE, linkname="real"),
                                 entry("alias/f", data=b"x")],
    "hardlink-dotdot": [entry("h", tarfile.LNKTYPE, linkname="../outside/secret")],
    "hardlink-absolute": [entry("h", tarfile.LNKTYPE, linkname="{outside}/secret")],
    "hardlink-through-symlink": [entry("link", tarfile.SYMTYPE, linkname="{outside}"),
                                 entry("h", tarfile.LNKTYPE, linkname="link/secret")],
    "whiteout-through-symlink": [entry("link", tarfile.SYMTYPE, linkname="{outside}"),
                                 entry("link/.wh.secret")],
    "opaque-through-symlink": [entry("link", tarfile.SYMTYPE, linkname="{outside}"),
                               entry("link/.wh..wh..opq")],
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layers_are_rejected_whole(tmp_dir: Path, case: str) -> None:
    outside = tmp_dir / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    store = tmp_dir / "store"
    store.mkdir()
    entries = []
    for info, data in [entry("ok", data=b"fine"), *MALICIOUS[case]]:
        info.linkname = info.linkname.replace("{outside}", str(outside))
        entries.append((info, data))
    before = _snapshot(tmp_dir)
    with pytest.raises(UnsafeLayer) as err:
        unpack(make_tar(*entries), store / "layer")
    assert "test-layer" in str(err.value)
    assert _snapshot(tmp_dir) == before  # no layer, no temporary dir, nothing outside
    assert not (Path("/tmp") / "evil").exists()


def test_clean_name() -> None:
    assert clean_name("./a//b/./c", "l") == "a/b/c"
    assert clean_name("./", "l") == ""
    with pytest.raises(UnsafeLayer, match="'..'"):
        clean_name("a/../b", "l")
    with pytest.raises(UnsafeLayer, match="absolute"):
        clean_name("/a", "l")


def test_diff_id_mismatch_leaves_nothing(tmp_dir: Path) -> None:
    with pytest.raises(DigestMismatch, match="test-layer"):
        unpack(make_tar(entry("a", data=b"a")), tmp_dir / "layer", "sha256:" + "0" * 64)
    assert list(tmp_dir.iterdir()) == []


def test_truncated_or_garbage_input_leaves_nothing(tmp_dir: Path) -> None:
    data = gzip.compress(make_tar(entry("a", data=b"a" * 100_000)))
    with pytest.raises(LayerError, match="test-layer"):
        unpack(data[: len(data) // 2], tmp_dir / "layer")
    with pytest.raises(LayerError):
        unpack(b"this is not a tar archive at all" * 30, tmp_dir / "layer2")
    assert list(tmp_dir.iterdir()) == []


def test_unpack_refuses_an_existing_destination(tmp_dir: Path) -> None:
    (tmp_dir / "layer").mkdir()
    with pytest.raises(OSError):
        unpack(make_tar(entry("a", data=b"a")), tmp_dir / "layer")
    assert sorted(p.name for p in tmp_dir.iterdir()) == ["layer"]
