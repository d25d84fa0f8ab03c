"""Build internals without root: upper dir → layer tar, the image view, config steps, cache."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from runtime.images import ImageStore
from runtime.images.buildcache import BuildCache, CacheEntry, step_key
from runtime.images.buildconfig import BuildArgs, Stage, StepError, apply_config_step
from runtime.images.buildcopy import ContextTree, entries_digest, plan_copy, write_copy_layer
from runtime.images.dockerfile import parse
from runtime.images.dockerignore import IgnoreRules
from runtime.images.imageview import ImageView, parse_passwd_user
from runtime.images.layerdiff import LayerWriter, add_upper
from runtime.images.oci import OCI_LAYER_GZIP, Descriptor
from tests.conftest import need


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def user_xattrs_work(path: Path) -> bool:
    probe = path / ".probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.test", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def test_upper_dir_becomes_a_layer_with_whiteouts(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc" / "conf.d").mkdir(parents=True)
    (upper / "etc" / "hosts").write_text("127.0.0.1 x\n")
    os.chmod(upper / "etc" / "hosts", 0o640)
    (upper / "etc" / "link").symlink_to("hosts")
    os.link(upper / "etc" / "hosts", upper / "etc" / "hardlink")
    need(user_xattrs_work(tmp_path), "needs user xattrs on the temporary file system")
    # overlayfs' deletion marks, in the userxattr form an unprivileged mount writes.
    (upper / "etc" / "removed").write_text("")
    os.setxattr(upper / "etc" / "removed", "user.overlay.whiteout", b"y")
    os.setxattr(upper / "etc" / "conf.d", "user.overlay.opaque", b"y")
    os.setxattr(upper / "etc", "user.overlay.origin", b"junk")  # bookkeeping: not kept
    os.setxattr(upper / "etc" / "hosts", "user.note", b"kept")
    writer = LayerWriter(tmp_path / "layer.tar")
    add_upper(writer, upper)
    writer.close()
    got = members(tmp_path / "layer.tar")
    assert sorted(got) == ["etc", "etc/.wh.removed", "etc/conf.d", "etc/conf.d/.wh..wh..opq",
                           "etc/hardlink", "etc/hosts", "etc/link"]
    # Entries go in name order: "hardlink" comes first and carries the inode's data.
    assert got["etc/hardlink"].isreg() and got["etc/hardlink"].mode == 0o640
    assert got["etc/hardlink"].pax_headers.get("SCHILY.xattr.user.note") == "kept"
    assert "SCHILY.xattr.user.overlay.origin" not in got["etc"].pax_headers
    assert got["etc/link"].issym() and got["etc/link"].linkname == "hosts"
    assert got["etc/hosts"].islnk() and got["etc/hosts"].linkname == "etc/hardlink"
    assert got["etc/.wh.removed"].size == 0


def test_char_device_whiteout_is_converted(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "mknod of a whiteout needs root; the xattr form is tested above")
    upper = tmp_path / "upper"
    upper.mkdir()
    os.mknod(upper / "gone", 0o020000, os.makedev(0, 0))
    writer = LayerWriter(tmp_path / "layer.tar")
    add_upper(writer, upper)
    writer.close()
    assert sorted(members(tmp_path / "layer.tar")) == [".wh.gone"]


def layer(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content.startswith("->"):
            path.symlink_to(content[2:])
        else:
            path.write_text(content)
    return root


def test_image_view_merges_layers(tmp_path: Path) -> None:
    bottom = layer(tmp_path / "l0", {"etc/a": "0", "etc/b": "0", "usr/bin/x": "x",
                                    "bin": "->usr/bin", "data": "dir-or-file"})
    top = layer(tmp_path / "l1", {"etc/a": "1", "abs": "->/usr/bin/x"})
    view = ImageView([top, bottom])
    assert view.read_file("/etc/a") == b"1"
    assert view.read_file("/etc/b") == b"0"
    assert view.read_file("/bin/x") == b"x"  # through the symlink, inside the image
    assert view.read_file("/abs") == b"x"
    assert view.resolve("/bin/x") == "usr/bin/x"
    assert view.resolve("/../../etc/a") == "etc/a"  # never above the image's root
    assert view.listdir("etc") == ["a", "b"]
    assert view.is_dir("/bin") and not view.is_dir("/etc/a")
    assert view.lookup("nope") is None


def test_passwd_lookup(tmp_path: Path) -> None:
    root = layer(tmp_path / "l0", {
        "etc/passwd": "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        "etc/group": "root:x:0:\nuser:x:1000:\nwheel:x:10:user,other\n",
    })
    view = ImageView([root])
    assert parse_passwd_user(view, "user") == (1000, 1000, (10,))
    assert parse_passwd_user(view, "1000") == (1000, 1000, (10,))
    assert parse_passwd_user(view, "user:wheel") == (1000, 10, ())
    assert parse_passwd_user(view, "4242") == (4242, 0, ())
    assert parse_passwd_user(view, "4242:7") == (4242, 7, ())
    with pytest.raises(LookupError, match="user 'ghost'"):
        parse_passwd_user(view, "ghost")


def test_copy_layer_keeps_parents_as_the_image_has_them(tmp_path: Path) -> None:
    base = tmp_path / "l0"
    (base / "tmp").mkdir(parents=True)
    os.chmod(base / "tmp", 0o1777)
    ctx = layer(tmp_path / "ctx", {"f": "content"})
    view = ImageView([base])
    entries = plan_copy(ContextTree(ctx, IgnoreRules([])), ["f"], "/tmp/new/", "/", view)
    writer = LayerWriter(tmp_path / "layer.tar")
    write_copy_layer(writer, entries, view)
    writer.close()
    got = members(tmp_path / "layer.tar")
    assert list(got) == ["tmp", "tmp/new", "tmp/new/f"]
    assert got["tmp"].mode == 0o1777 and got["tmp/new"].mode == 0o755
    assert got["tmp/new/f"].uid == 0 and got["tmp/new/f"].size == len("content")


def test_entries_digest_follows_content_and_mode(tmp_path: Path) -> None:
    ctx = layer(tmp_path / "ctx", {"f": "one"})
    tree = ContextTree(ctx, IgnoreRules([]))

    def digest(mode: int | None = None) -> str:
        return entries_digest(plan_copy(tree, ["f"], "/f", "/", ImageView([]), mode=mode))

    first = digest()
    assert digest() == first
    os.utime(ctx / "f", (1, 1))
    assert digest() == first  # times do not matter, as in Docker
    assert digest(mode=0o600) != first
    (ctx / "f").write_text("two")
    assert digest() != first


def test_step_keys() -> None:
    a = step_key("sha256:base", "RUN a")
    assert a == step_key("sha256:base", "RUN a")
    assert a != step_key("sha256:other", "RUN a")
    assert a != step_key("sha256:base", "RUN b")
    assert a != step_key("sha256:base", "RUN a", "env")


def test_cache_round_trip_and_missing_blob(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    cache = BuildCache(store)
    blob = store.put_blob(b"layer bytes")
    present = Descriptor(OCI_LAYER_GZIP, blob, 11)
    cache.put("k1", CacheEntry("2024-01-01T00:00:00Z", present, "sha256:" + "1" * 64))
    cache.put("k2", CacheEntry("2024-01-01T00:00:01Z"))
    missing = Descriptor(OCI_LAYER_GZIP, "sha256:" + "2" * 64, 5)
    cache.put("k3", CacheEntry("2024-01-01T00:00:02Z", missing, "sha256:" + "3" * 64))
    again = BuildCache(store)  # read back from the file
    hit = again.get("k1")
    assert hit is not None and hit.layer == present
    assert again.get("k2") == CacheEntry("2024-01-01T00:00:01Z")
    assert again.get("k3") is None  # its blob is gone: a miss
    assert again.get("nope") is None


def stage() -> Stage:
    return Stage(name="0", config={"config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]}},
                 layers=[], key="k")


def apply(s: Stage, line: str, args: BuildArgs | None = None) -> str:
    ins = parse("FROM scratch\n" + line).instructions[1]
    return apply_config_step(s, ins, "\\", args or BuildArgs(given={}))


def test_env_substitution_sees_values_from_before_the_line() -> None:
    s = stage()
    apply(s, "ENV A=hello")
    assert apply(s, "ENV A=bye B=$A") == "ENV A=bye B=hello"
    apply(s, "ENV C ${A} and $PATH")
    assert s.env() == {"PATH": "/bin", "A": "bye", "B": "hello", "C": "bye and /bin"}


def test_arg_defaults_build_args_and_env_precedence() -> None:
    s = stage()
    args = BuildArgs(given={"V": "given"})
    apply(s, "ARG V=default W=w", args)
    assert s.args == {"V": "given", "W": "w"} and args.used == {"V"}
    apply(s, "ENV W=from-env")
    assert s.variables()["W"] == "from-env"
    assert "W=w" not in s.run_env() and "V=given" in s.run_env()
    apply(s, "LABEL v=$V")
    assert s.cfg["Labels"] == {"v": "given"}


def test_cmd_entrypoint_and_shell() -> None:
    s = stage()
    apply(s, "ENTRYPOINT top -b")
    assert s.cfg["Entrypoint"] == ["/bin/sh", "-c", "top -b"]
    assert s.cfg["Cmd"] is None  # an inherited CMD is dropped by a new ENTRYPOINT
    apply(s, 'SHELL ["/bin/ash", "-ec"]')
    apply(s, "CMD echo hi")
    assert s.cfg["Cmd"] == ["/bin/ash", "-ec", "echo hi"]
    apply(s, 'ENTRYPOINT ["/init"]')
    assert s.cfg["Cmd"] == ["/bin/ash", "-ec", "echo hi"]  # set in this stage: kept


def test_expose_workdir_user() -> None:
    s = stage()
    apply(s, "ENV P=8080")
    assert apply(s, "EXPOSE 80 $P/udp 9000-9001") == "EXPOSE 80/tcp 8080/udp 9000-9001/tcp"
    with pytest.raises(StepError, match="invalid port"):
        apply(s, "EXPOSE http")
    apply(s, "WORKDIR /app")
    apply(s, "WORKDIR sub/../src")
    assert s.cfg["WorkingDir"] == "/app/src"
    apply(s, "USER 1000:1000")
    assert s.cfg["User"] == "1000:1000"
