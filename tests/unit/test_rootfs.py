"""rootfs set-up as a sequence of mount calls, recorded by the fake seam (no root needed)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from runtime import rootfs
from runtime import syscalls as sc
from runtime.errors import SetupError
from runtime.rootfs import (
    enter_rootfs,
    finish_rootfs,
    mount_overlay,
    mounted_flags,
    overlay_data,
    prepare_rootfs,
    resolve_in_root,
    unmount,
)
from runtime.spec.model import (
    DEFAULT_MOUNTS,
    ContainerConfig,
    Device,
    Mount,
    Namespace,
    Overlay,
    Process,
    Root,
)

BIND, REC, REMOUNT = sc.MS_BIND, sc.MS_REC, sc.MS_REMOUNT
NOSUID, NODEV, NOEXEC, RDONLY = sc.MS_NOSUID, sc.MS_NODEV, sc.MS_NOEXEC, sc.MS_RDONLY

RUNC_MOUNTS = DEFAULT_MOUNTS

DEFAULT_NODES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                 ("urandom", 1, 9), ("tty", 5, 0))


def make_config(root: Path, **kw: object) -> ContainerConfig:
    overlay = kw.pop("overlay", None)
    readonly = bool(kw.pop("readonly", False))
    return ContainerConfig(
        oci_version="1.2.0",
        process=Process(args=("sh",)),
        root=Root(path=root, readonly=readonly, overlay=overlay),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


class FailingSyscalls(sc.RecordingSyscalls):
    """Records like the fake, and fails new filesystem mounts whose target ends with a suffix."""

    def __init__(self, fail_target: dict[str, int] | None = None) -> None:
        super().__init__()
        self.fail_target = fail_target or {}

    def mount(self, source: str, target: str, fstype: str | None, flags: int,
              data: str | None) -> None:
        super().mount(source, target, fstype, flags, data)
        for suffix, err in self.fail_target.items():
            if target.endswith(suffix) and fstype is not None:
                raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    for d in ("proc", "sys", "dev", "etc", "tmp"):
        (r / d).mkdir(parents=True)
    return r


def mounts(fake: sc.RecordingSyscalls) -> list[tuple[object, ...]]:
    return [c for c in fake.calls if c[0] == "mount"]


def is_remount(call: tuple[object, ...]) -> bool:
    flags = call[4]
    return isinstance(flags, int) and bool(flags & REMOUNT)


def node_calls(r: str) -> list[tuple[object, ...]]:
    return [("mknod", f"{r}/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(ma, mi))
            for name, ma, mi in DEFAULT_NODES]


# --- the whole sequence ------------------------------------------------------------------


def test_runc_default_config_mount_sequence(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = make_config(root, mounts=(*RUNC_MOUNTS, Mount("/data", "bind", str(data),
                                                           ("rbind", "ro", "nosuid"))))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    r = str(root)
    assert fake.calls == [
        ("mount", "", "/", None, REC | sc.MS_PRIVATE, None),
        ("mount", r, r, None, BIND | REC, None),
        ("mount", "proc", f"{r}/proc", "proc", 0, None),
        ("mount", "tmpfs", f"{r}/dev", "tmpfs", NOSUID | sc.MS_STRICTATIME,
         "mode=755,size=65536k"),
        ("mount", "devpts", f"{r}/dev/pts", "devpts", NOSUID | NOEXEC,
         "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("mount", "shm", f"{r}/dev/shm", "tmpfs", NOSUID | NOEXEC | NODEV,
         "mode=1777,size=65536k"),
        ("mount", "mqueue", f"{r}/dev/mqueue", "mqueue", NOSUID | NOEXEC | NODEV, None),
        ("mount", "sysfs", f"{r}/sys", "sysfs", NOSUID | NOEXEC | NODEV | RDONLY, None),
        ("mount", str(data), f"{r}/data", None, BIND | REC, None),
        ("mount", "", f"{r}/data", None, BIND | REMOUNT | RDONLY | NOSUID, None),
        *node_calls(r),
    ]
    assert (root / "data").is_dir() and (root / "dev/pts").is_dir()


def test_dev_links(root: Path) -> None:
    prepare_rootfs(make_config(root, mounts=RUNC_MOUNTS), sc.RecordingSyscalls())
    dev = root / "dev"
    assert os.readlink(dev / "ptmx") == "pts/ptmx"
    assert os.readlink(dev / "fd") == "/proc/self/fd"
    assert os.readlink(dev / "stdin") == "/proc/self/fd/0"
    assert os.readlink(dev / "stdout") == "/proc/self/fd/1"
    assert os.readlink(dev / "stderr") == "/proc/self/fd/2"
    assert os.readlink(dev / "core") == "/proc/kcore"


def test_ptmx_node_replaced_by_link(root: Path) -> None:
    (root / "dev" / "ptmx").write_text("")
    prepare_rootfs(make_config(root), sc.RecordingSyscalls())
    assert os.readlink(root / "dev" / "ptmx") == "pts/ptmx"


def test_dev_defaults_when_config_has_no_dev(root: Path) -> None:
    config = make_config(root, mounts=(Mount("/proc", "proc", "proc"),))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    r = str(root)
    # /dev first so nothing the config mounts below it is hidden; pts and shm after.
    assert [(c[2], c[3]) for c in mounts(fake)] == [
        ("/", None), (r, None), (f"{r}/dev", "tmpfs"), (f"{r}/proc", "proc"),
        (f"{r}/dev/pts", "devpts"), (f"{r}/dev/shm", "tmpfs"),
    ]
    assert mounts(fake)[2][4] == NOSUID | sc.MS_STRICTATIME
    assert mounts(fake)[4][5] == "newinstance,ptmxmode=0666,mode=0620"
    assert mounts(fake)[4][4] == NOSUID | NOEXEC


def test_bind_mounted_dev_is_left_alone(root: Path) -> None:
    config = make_config(root, mounts=(Mount("/dev", "bind", "/dev", ("rbind",)),))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    assert "mknod" not in fake.names()
    assert [c[2] for c in mounts(fake)][-1] == f"{root}/dev"
    assert not (root / "dev" / "ptmx").is_symlink()


def test_config_devices(root: Path) -> None:
    devices = (Device("/dev/fuse", "c", 10, 229, 0o600, uid=1000, gid=1000),
               Device("/dev/net/tun", "c", 10, 200),
               Device("/dev/null", "c", 1, 3, 0o644),
               Device("/dev/fifo", "p", 0, 0, 0o600),
               Device("/dev/sda", "b", 8, 0, 0o660))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(make_config(root, devices=devices), fake)
    r = str(root)
    nodes = [c for c in fake.calls if c[0] in ("mknod", "chown")]
    assert nodes == [
        *[c for c in node_calls(r) if c[1] != f"{r}/dev/null"],
        ("mknod", f"{r}/dev/fuse", stat.S_IFCHR | 0o600, os.makedev(10, 229)),
        ("chown", f"{r}/dev/fuse", 1000, 1000),
        ("mknod", f"{r}/dev/net/tun", stat.S_IFCHR | 0o666, os.makedev(10, 200)),
        ("mknod", f"{r}/dev/null", stat.S_IFCHR | 0o644, os.makedev(1, 3)),
        ("mknod", f"{r}/dev/fifo", stat.S_IFIFO | 0o600, 0),
        ("mknod", f"{r}/dev/sda", stat.S_IFBLK | 0o660, os.makedev(8, 0)),
    ]


def test_mknod_refused_falls_back_to_binding_host_nodes(root: Path) -> None:
    fake = sc.RecordingSyscalls(fail_on={"mknod": errno.EPERM})
    prepare_rootfs(make_config(root), fake)
    r = str(root)
    binds = [c for c in mounts(fake) if c[4] == BIND]
    assert binds == [("mount", f"/dev/{n}", f"{r}/dev/{n}", None, BIND, None)
                     for n, _, _ in DEFAULT_NODES]
    for name, _, _ in DEFAULT_NODES:
        assert (root / "dev" / name).is_file()  # the empty file the host node covers


def test_umask_does_not_narrow_node_modes(root: Path) -> None:
    old = os.umask(0o077)
    try:
        fake = sc.RecordingSyscalls(fail_on={"mknod": errno.EPERM})
        prepare_rootfs(make_config(root), fake)
        assert os.umask(0o077) == 0o077  # restored
    finally:
        os.umask(old)


# --- options -------------------------------------------------------------------------------


def test_tmpfs_options(root: Path) -> None:
    config = make_config(root, mounts=(
        Mount("/run", "tmpfs", "tmpfs", ("nosuid", "nodev", "noexec", "size=1m", "mode=700")),
    ))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    assert ("mount", "tmpfs", f"{root}/run", "tmpfs", NOSUID | NODEV | NOEXEC,
            "size=1m,mode=700") in fake.calls
    assert (root / "run").is_dir()


def test_propagation_option_is_a_separate_call(root: Path, tmp_path: Path) -> None:
    config = make_config(root, mounts=(Mount("/data", "", str(tmp_path), ("rbind", "rshared")),))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    target = f"{root}/data"
    i = fake.calls.index(("mount", str(tmp_path), target, None, BIND | REC, None))
    assert fake.calls[i + 1] == ("mount", "", target, None, sc.MS_SHARED | REC, None)


def test_bind_without_flags_has_no_remount(root: Path, tmp_path: Path) -> None:
    config = make_config(root, mounts=(Mount("/data", "none", str(tmp_path), ("bind",)),))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    assert not [c for c in mounts(fake) if c[2] == f"{root}/data" and is_remount(c)]
    assert ("mount", str(tmp_path), f"{root}/data", None, BIND, None) in fake.calls


def test_bind_of_a_file_makes_an_empty_file(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "resolv.conf"
    src.write_text("nameserver 10.96.0.10\n")
    config = make_config(root, mounts=(Mount("/etc/deep/resolv.conf", "bind", str(src),
                                             ("ro",)),))
    prepare_rootfs(config, sc.RecordingSyscalls())
    made = root / "etc" / "deep" / "resolv.conf"
    assert made.is_file() and made.read_text() == ""


def test_unknown_option_names_the_mount(root: Path) -> None:
    config = make_config(root, mounts=(Mount("/run", "tmpfs", "tmpfs", ("bogus",)),))
    with pytest.raises(SetupError, match=r"mount tmpfs on /run: unknown mount option 'bogus'"):
        prepare_rootfs(config, sc.RecordingSyscalls())


def test_failed_mount_names_type_and_destination(root: Path) -> None:
    fake = FailingSyscalls(fail_target={"/dev": errno.EACCES})
    with pytest.raises(SetupError) as e:
        prepare_rootfs(make_config(root, mounts=RUNC_MOUNTS), fake)
    assert str(e.value) == "mount tmpfs on /dev: Permission denied"
    assert isinstance(e.value.__cause__, OSError)


def test_missing_bind_source_is_a_setup_error(root: Path) -> None:
    config = make_config(root, mounts=(Mount("/data", "bind", "/nonexistent/podium", ()),))
    with pytest.raises(SetupError, match="bind /nonexistent/podium on /data: No such file"):
        prepare_rootfs(config, sc.RecordingSyscalls())


def test_locked_flags_are_kept_on_bind_remount(root: Path, tmp_path: Path) -> None:
    class Locked(sc.RecordingSyscalls):
        tries = 0

        def mount(self, source: str, target: str, fstype: str | None, flags: int,
                  data: str | None) -> None:
            super().mount(source, target, fstype, flags, data)
            if flags & REMOUNT and self.tries == 0:
                self.tries += 1
                raise PermissionError(errno.EPERM, "locked")

    config = make_config(root, mounts=(Mount("/data", "bind", str(tmp_path), ("ro",)),))
    fake = Locked()
    prepare_rootfs(config, fake)
    remounts = [c for c in mounts(fake) if is_remount(c)]
    assert remounts[0][4] == BIND | REMOUNT | RDONLY
    kept = mounted_flags(f"{root}/data")
    assert remounts[1][4] == BIND | REMOUNT | RDONLY | kept


def test_sysfs_refused_falls_back_to_host_sys(root: Path) -> None:
    fake = FailingSyscalls(fail_target={"/sys": errno.EPERM})
    prepare_rootfs(make_config(root, mounts=RUNC_MOUNTS), fake)
    target = f"{root}/sys"
    sys_calls = [c for c in mounts(fake) if c[2] == target]
    assert sys_calls[1:] == [
        ("mount", "/sys", target, None, BIND | REC, None),
        ("mount", "", target, None, BIND | REMOUNT | NOSUID | NOEXEC | NODEV | RDONLY, None),
    ]


# --- cgroup --------------------------------------------------------------------------------


CGROUP_MOUNT = Mount("/sys/fs/cgroup", "cgroup", "cgroup",
                     ("nosuid", "noexec", "nodev", "relatime", "ro"))


def test_cgroup_with_cgroupns_mounts_cgroup2(root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    monkeypatch.setattr(rootfs, "_CGROUP2_MARKER", str(tmp_path / "cgroup.controllers"))
    config = make_config(root, mounts=(CGROUP_MOUNT,), namespaces=(Namespace("cgroup"),))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    flags = NOSUID | NOEXEC | NODEV | sc.MS_RELATIME | RDONLY
    assert ("mount", "cgroup2", f"{root}/sys/fs/cgroup", "cgroup2", flags, None) in fake.calls


def test_cgroup_without_cgroupns_binds_own_cgroup(root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    monkeypatch.setattr(rootfs, "_CGROUP2_MARKER", str(tmp_path / "cgroup.controllers"))
    monkeypatch.setattr(rootfs, "_own_cgroup", lambda dest: "/podium/c1")
    fake = sc.RecordingSyscalls()
    prepare_rootfs(make_config(root, mounts=(CGROUP_MOUNT,)), fake)
    target = f"{root}/sys/fs/cgroup"
    assert [c for c in mounts(fake) if c[2] == target] == [
        ("mount", "/sys/fs/cgroup/podium/c1", target, None, BIND | REC, None),
        ("mount", "", target, None,
         BIND | REMOUNT | NOSUID | NOEXEC | NODEV | sc.MS_RELATIME | RDONLY, None),
    ]


def test_cgroup_bind_is_read_only_even_if_config_says_rw(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    monkeypatch.setattr(rootfs, "_CGROUP2_MARKER", str(tmp_path / "cgroup.controllers"))
    monkeypatch.setattr(rootfs, "_own_cgroup", lambda dest: "/podium/c1")
    fake = sc.RecordingSyscalls()
    rw = Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("rw",))
    prepare_rootfs(make_config(root, mounts=(rw,)), fake)
    assert ("mount", "", f"{root}/sys/fs/cgroup", None, BIND | REMOUNT | RDONLY,
            None) in fake.calls


def test_cgroup_v1_is_refused_clearly(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "_CGROUP2_MARKER", "/nonexistent/cgroup.controllers")
    with pytest.raises(SetupError, match="mount cgroup on /sys/fs/cgroup: only cgroup v2"):
        prepare_rootfs(make_config(root, mounts=(CGROUP_MOUNT,)), sc.RecordingSyscalls())


# --- symlinks in the image -----------------------------------------------------------------


def test_absolute_symlink_stays_in_root(root: Path) -> None:
    (root / "evil").symlink_to("/etc")
    config = make_config(root, mounts=(Mount("/evil/podium-x", "tmpfs", "tmpfs"),))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    assert ("mount", "tmpfs", f"{root}/etc/podium-x", "tmpfs", 0, None) in fake.calls
    assert (root / "etc" / "podium-x").is_dir()
    assert not Path("/etc/podium-x").exists()


def test_relative_symlink_stays_in_root(root: Path) -> None:
    (root / "tmp" / "up").symlink_to("../../../../../..")
    config = make_config(root, mounts=(Mount("/tmp/up/tmp/x", "tmpfs", "tmpfs"),))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    assert mounts(fake)[-3][2] == f"{root}/tmp/x"  # then /dev/pts, /dev/shm
    for call in mounts(fake)[1:]:
        assert str(call[2]).startswith(str(root))


def test_symlink_loop_is_a_setup_error(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("/a")
    config = make_config(root, mounts=(Mount("/a/x", "tmpfs", "tmpfs"),))
    with pytest.raises(SetupError, match="mount tmpfs on /a/x: Too many levels"):
        prepare_rootfs(config, sc.RecordingSyscalls())


def test_resolve_in_root(root: Path) -> None:
    r = str(root)
    (root / "etc" / "conf").mkdir()
    (root / "link").symlink_to("etc/conf")
    (root / "etc" / "back").symlink_to("../../../etc")
    (root / "abs").symlink_to("/etc/../etc/conf")
    assert resolve_in_root(r, "/") == r
    assert resolve_in_root(r, "/link/a") == f"{r}/etc/conf/a"
    assert resolve_in_root(r, "/etc/back/conf") == f"{r}/etc/conf"
    assert resolve_in_root(r, "/abs/../x") == f"{r}/etc/x"
    assert resolve_in_root(r, "/../../x/./y/") == f"{r}/x/y"
    assert resolve_in_root(r, "/missing/../etc") == f"{r}/etc"
    # Climbing out of a missing directory must look up links again.
    (root / "evil").symlink_to("/etc/conf")
    assert resolve_in_root(r, "/missing/deeper/../../evil/x") == f"{r}/etc/conf/x"
    assert resolve_in_root(r, "/missing/deeper/../evil") == f"{r}/missing/evil"
    assert resolve_in_root(r + "/", "etc") == f"{r}/etc"


# --- overlay -------------------------------------------------------------------------------


def test_overlay_data_is_top_first() -> None:
    ov = Overlay(lower=(Path("/l/top"), Path("/l/mid"), Path("/l/base")),
                 upper=Path("/c/upper"), work=Path("/c/work"))
    assert overlay_data(ov) == "lowerdir=/l/top:/l/mid:/l/base,upperdir=/c/upper,workdir=/c/work"


def test_overlay_data_escapes_colons_and_refuses_commas() -> None:
    ov = Overlay(lower=(Path("/l/sha256:ab"),), upper=Path("/u"), work=Path("/w"))
    assert overlay_data(ov) == "lowerdir=/l/sha256\\:ab,upperdir=/u,workdir=/w"
    with pytest.raises(SetupError, match="','"):
        overlay_data(Overlay(lower=(Path("/l/a,b"),), upper=Path("/u"), work=Path("/w")))
    with pytest.raises(SetupError, match="at least one lower"):
        overlay_data(Overlay(lower=(), upper=Path("/u"), work=Path("/w")))


def test_overlay_data_too_long() -> None:
    lower = tuple(Path("/var/lib/podium/layers/" + "a" * 64 + str(i)) for i in range(60))
    with pytest.raises(SetupError, match="60 layers are too many"):
        overlay_data(Overlay(lower=lower, upper=Path("/u"), work=Path("/w")))


def test_overlay_root(root: Path) -> None:
    ov = Overlay(lower=(Path("/l"),), upper=Path("/u"), work=Path("/w"))
    fake = sc.RecordingSyscalls()
    prepare_rootfs(make_config(root, overlay=ov), fake)
    assert fake.calls[1] == ("mount", "overlay", str(root), "overlay", 0, overlay_data(ov))
    assert (str(root), str(root)) not in [(c[1], c[2]) for c in mounts(fake)]


def test_mount_overlay_and_unmount(tmp_path: Path) -> None:
    ov = Overlay(lower=(Path("/l"),), upper=Path("/u"), work=Path("/w"))
    fake = sc.RecordingSyscalls()
    mount_overlay(ov, tmp_path, fake)
    unmount(tmp_path, fake)
    assert fake.calls == [("mount", "overlay", str(tmp_path), "overlay", 0, overlay_data(ov)),
                          ("umount2", str(tmp_path), sc.MNT_DETACH)]
    unmount(tmp_path, sc.RecordingSyscalls(fail_on={"umount2": errno.EINVAL}))  # already gone
    with pytest.raises(SetupError, match="unmount .*: Device or resource busy"):
        unmount(tmp_path, sc.RecordingSyscalls(fail_on={"umount2": errno.EBUSY}))


# --- propagation and pivot_root --------------------------------------------------------------


@pytest.mark.parametrize(("wanted", "first", "last"), [
    (None, REC | sc.MS_PRIVATE, None),
    ("rprivate", REC | sc.MS_PRIVATE, None),
    ("private", REC | sc.MS_PRIVATE, sc.MS_PRIVATE),
    ("rslave", REC | sc.MS_SLAVE, REC | sc.MS_SLAVE),
    ("rshared", REC | sc.MS_SLAVE, REC | sc.MS_SHARED),
    ("shared", REC | sc.MS_SLAVE, sc.MS_SHARED),
    ("runbindable", REC | sc.MS_PRIVATE, REC | sc.MS_UNBINDABLE),
])
def test_rootfs_propagation(root: Path, monkeypatch: pytest.MonkeyPatch, wanted: str | None,
                            first: int, last: int | None) -> None:
    monkeypatch.chdir(root)
    config = make_config(root, rootfs_propagation=wanted)
    fake = sc.RecordingSyscalls()
    prepare_rootfs(config, fake)
    assert fake.calls[0] == ("mount", "", "/", None, first, None)
    fake.calls.clear()
    enter_rootfs(config, fake)
    tail = [("mount", "", "/", None, last, None)] if last is not None else []
    assert fake.calls == [
        ("pivot_root", ".", "."),
        ("mount", "", ".", None, sc.MS_SLAVE | REC, None),
        ("umount2", ".", sc.MNT_DETACH),
        *tail,
    ]


def test_bad_rootfs_propagation(root: Path) -> None:
    with pytest.raises(SetupError, match="rootfsPropagation 'ro'"):
        prepare_rootfs(make_config(root, rootfs_propagation="ro"), sc.RecordingSyscalls())


def test_enter_rootfs_chdirs_to_new_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root.parent)
    seen: list[str] = []

    class Watching(sc.RecordingSyscalls):
        def pivot_root(self, new_root: str, put_old: str) -> None:
            seen.append(os.getcwd())
            super().pivot_root(new_root, put_old)

    enter_rootfs(make_config(root), Watching())
    assert seen == [str(root)]
    assert os.getcwd() == "/"


def test_failed_pivot_root_is_a_setup_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root)
    fake = sc.RecordingSyscalls(fail_on={"pivot_root": errno.EINVAL})
    with pytest.raises(SetupError, match=f"pivot_root into {root}: Invalid argument"):
        enter_rootfs(make_config(root), fake)


# --- masked and read-only paths ------------------------------------------------------------


def test_masked_paths(root: Path) -> None:
    (root / "proc" / "kcore").write_text("secret")
    (root / "sys" / "firmware").mkdir()
    masked = (f"{root}/proc/kcore", f"{root}/sys/firmware", f"{root}/proc/missing",
              f"{root}/proc/kcore/below")
    fake = sc.RecordingSyscalls()
    finish_rootfs(make_config(root, masked_paths=masked, readonly_paths=()), fake)
    assert fake.calls == [
        ("mount", "/dev/null", f"{root}/proc/kcore", None, BIND, None),
        ("mount", "tmpfs", f"{root}/sys/firmware", "tmpfs", RDONLY, None),
    ]


def test_readonly_paths_keep_their_flags(root: Path) -> None:
    path = f"{root}/proc"
    fake = sc.RecordingSyscalls()
    config = make_config(root, masked_paths=(), readonly_paths=(path, f"{root}/proc/nope"))
    finish_rootfs(config, fake)
    kept = mounted_flags(path)
    assert fake.calls == [
        ("mount", path, path, None, BIND | REC, None),
        ("mount", "", path, None, BIND | REMOUNT | RDONLY | kept, None),
    ]


def test_mounted_flags_match_statvfs(tmp_path: Path) -> None:
    f_flag = os.statvfs(tmp_path).f_flag
    flags = mounted_flags(str(tmp_path))
    assert bool(flags & NOSUID) == bool(f_flag & os.ST_NOSUID)
    assert bool(flags & RDONLY) == bool(f_flag & os.ST_RDONLY)
    assert bool(flags & sc.MS_RELATIME) == bool(f_flag & os.ST_RELATIME)


def test_readonly_root(root: Path) -> None:
    fake = sc.RecordingSyscalls()
    finish_rootfs(make_config(root, readonly=True, masked_paths=(), readonly_paths=()), fake)
    assert fake.calls == [("mount", "", "/", None, BIND | REMOUNT | RDONLY, None)]


def test_masked_path_failure_names_the_path(root: Path) -> None:
    (root / "proc" / "kcore").write_text("")
    fake = sc.RecordingSyscalls(fail_on={"mount": errno.EPERM})
    config = make_config(root, masked_paths=(f"{root}/proc/kcore",), readonly_paths=())
    with pytest.raises(SetupError, match=f"mask {root}/proc/kcore: Operation not permitted"):
        finish_rootfs(config, fake)
