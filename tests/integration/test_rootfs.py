"""rootfs set-up on the real kernel: each test builds a container's view in a forked child.

The child unshares a mount, PID and UTS namespace (optionally a user namespace
first), forks the PID namespace's init, and that init runs prepare_rootfs,
enter_rootfs and finish_rootfs, then looks around and reports what it saw as JSON
over a pipe. Everything is mounted in the child's namespace, so nothing reaches
the host (the autouse leak check verifies it).

Only modules imported before the fork can be used after pivot_root: the image is
busybox, without Python's library.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime import syscalls as sc
from runtime.errors import SetupError
from runtime.rootfs import enter_rootfs, finish_rootfs, prepare_rootfs
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
from tests.conftest import need, need_root

Report = dict[str, Any]

RUNC_MOUNTS = DEFAULT_MOUNTS


@pytest.fixture(autouse=True)
def _root() -> None:
    need_root()


def config_for(root: Root, **kw: Any) -> ContainerConfig:
    kw.setdefault("mounts", RUNC_MOUNTS)
    return ContainerConfig(oci_version="1.2.0", process=Process(args=("sh",)), root=root, **kw)


def overlay_root(lower: Path, tmp_dir: Path, *extra_lower: Path, readonly: bool = False) -> Root:
    (tmp_dir / "upper").mkdir()
    (tmp_dir / "work").mkdir()
    (tmp_dir / "merged").mkdir()
    overlay = Overlay(lower=(*extra_lower, lower), upper=tmp_dir / "upper", work=tmp_dir / "work")
    return Root(path=tmp_dir / "merged", readonly=readonly, overlay=overlay)


def _write_own_id_maps() -> None:
    # A process may map its own (host root) IDs into the namespace it just made.
    for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def run_in_container(config: ContainerConfig, look: Callable[[], Report], *,
                     userns: bool = False, extra_flags: int = 0,
                     before: Callable[[sc.Syscalls], None] | None = None) -> Report:
    """Set up ``config``'s root in fresh namespaces, run ``look`` inside, return its report."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            sys = sc.LinuxSyscalls()
            if userns:
                sys.unshare(sc.CLONE_NEWUSER)
                _write_own_id_maps()
            sys.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | extra_flags)
            if before is not None:
                before(sys)
            init = os.fork()
            if init == 0:
                report: Report
                try:
                    prepare_rootfs(config, sys)
                    enter_rootfs(config, sys)
                    finish_rootfs(config, sys)
                    report = {"ok": True, **look()}
                except BaseException as e:  # noqa: B036 - everything must reach the parent
                    report = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                os.write(write_end, json.dumps(report).encode())
                os._exit(0)
            _, status = os.waitpid(init, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(b"".join(chunks)) if chunks else {"ok": False, "error": "no report"}


def expect_ok(report: Report) -> Report:
    assert report["ok"], report.get("error")
    return report


# --- what the container's init looks at (only pre-imported modules) ---------------------


def mountinfo() -> list[dict[str, str]]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split()
            fstype, source, super_opts = right.split(" ", 2)
            found.append({"root": fields[3], "point": fields[4], "opts": fields[5],
                          "tags": " ".join(fields[6:]), "fstype": fstype, "source": source,
                          "super": super_opts})
    return found


def try_write(path: str, data: bytes = b"x") -> str:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    return "ok"


def try_read(path: str, size: int = 64) -> str | int:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            return len(os.read(fd, size))
        finally:
            os.close(fd)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))


def try_unlink(path: str) -> str:
    try:
        os.unlink(path)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))
    return "ok"


def at(point: str) -> list[dict[str, str]]:
    return [m for m in mountinfo() if m["point"] == point]


# --- tests -------------------------------------------------------------------------------


def test_overlay_root_writes_land_in_upper(busybox_rootfs: Path, tmp_dir: Path) -> None:
    root = overlay_root(busybox_rootfs, tmp_dir)
    config = config_for(root)

    def look() -> Report:
        return {
            "write": try_write("/etc/podium-hello", b"hello"),
            "rm": try_unlink("/bin/ls"),
            "old_root_visible": os.path.exists(str(tmp_dir)),
            "root": at("/"),
            "points": [m["point"] for m in mountinfo()],
            "cwd": os.getcwd(),
        }

    report = expect_ok(run_in_container(config, look))
    assert report["write"] == "ok" and report["rm"] == "ok"
    assert report["cwd"] == "/"
    assert not report["old_root_visible"]
    assert [m["fstype"] for m in report["root"]] == ["overlay"]
    # Only the container's own mounts: the host's tree went with the old root.
    assert set(report["points"]) <= {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
                                     "/sys", *config.masked_paths, *config.readonly_paths}
    upper = tmp_dir / "upper"
    assert (upper / "etc" / "podium-hello").read_text() == "hello"
    whiteout = os.lstat(upper / "bin" / "ls")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert (busybox_rootfs / "bin" / "ls").is_symlink()
    assert not (busybox_rootfs / "etc" / "podium-hello").exists()


def test_devices_present_and_usable(busybox_rootfs: Path, tmp_dir: Path) -> None:
    extra = (Device("/dev/podium-null", "c", 1, 3, 0o600, uid=1000, gid=1000),
             Device("/dev/net/podium-zero", "c", 1, 5, 0o640))
    config = config_for(overlay_root(busybox_rootfs, tmp_dir), devices=extra)

    def look() -> Report:
        ptmx = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
        pts = sorted(os.listdir("/dev/pts"))
        os.close(ptmx)
        modes = {}
        for name in ("null", "zero", "full", "random", "urandom", "tty", "podium-null",
                     "net/podium-zero"):
            st = os.stat(f"/dev/{name}")
            modes[name] = [stat.S_ISCHR(st.st_mode), stat.S_IMODE(st.st_mode),
                           os.major(st.st_rdev), os.minor(st.st_rdev), st.st_uid, st.st_gid]
        return {
            "null": try_write("/dev/null"),
            "zero": try_read("/dev/zero", 16),
            "full": try_write("/dev/full"),
            "urandom": try_read("/dev/urandom", 16),
            "modes": modes,
            "links": {n: os.readlink(f"/dev/{n}") for n in ("ptmx", "fd", "stdin", "stdout",
                                                           "stderr", "core")},
            "fd_listing": len(os.listdir("/dev/fd")) > 0,
            "pts": pts,
            "shm": try_write("/dev/shm/x"),
            "dev": at("/dev"),
            "devpts": at("/dev/pts"),
        }

    report = expect_ok(run_in_container(config, look))
    assert report["null"] == "ok"
    assert report["zero"] == 16 and report["urandom"] == 16
    assert report["full"] == "ENOSPC"
    modes = report["modes"]
    assert modes["null"] == [True, 0o666, 1, 3, 0, 0]
    assert modes["tty"] == [True, 0o666, 5, 0, 0, 0]
    assert modes["podium-null"] == [True, 0o600, 1, 3, 1000, 1000]
    assert modes["net/podium-zero"] == [True, 0o640, 1, 5, 0, 0]
    assert report["links"] == {"ptmx": "pts/ptmx", "fd": "/proc/self/fd",
                               "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                               "stderr": "/proc/self/fd/2", "core": "/proc/kcore"}
    assert report["fd_listing"]
    assert report["pts"] == ["0", "ptmx"]  # a new devpts instance: only our pty
    assert report["shm"] == "ok"
    assert report["dev"][0]["fstype"] == "tmpfs" and "nosuid" in report["dev"][0]["opts"]
    assert report["devpts"][0]["fstype"] == "devpts"


def test_dev_made_when_config_has_none(busybox_rootfs: Path, tmp_dir: Path) -> None:
    config = config_for(overlay_root(busybox_rootfs, tmp_dir),
                        mounts=(Mount("/proc", "proc", "proc"),))

    def look() -> Report:
        return {"dev": at("/dev"), "pts": at("/dev/pts"), "shm": at("/dev/shm"),
                "null": try_write("/dev/null")}

    report = expect_ok(run_in_container(config, look))
    assert [m["fstype"] for m in report["dev"]] == ["tmpfs"]
    assert "mode=755" in report["dev"][0]["super"]
    assert [m["fstype"] for m in report["pts"]] == ["devpts"]
    assert "ptmxmode=666" in report["pts"][0]["super"]
    assert [m["fstype"] for m in report["shm"]] == ["tmpfs"]
    assert report["null"] == "ok"


def test_masked_and_readonly_paths(busybox_rootfs: Path, tmp_dir: Path) -> None:
    config = config_for(overlay_root(busybox_rootfs, tmp_dir))
    # Which masked files exist depends on the kernel's build (CONFIG_PROC_KCORE...).
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.isfile(p)]
    dirs = [p for p in ("/proc/acpi", "/proc/scsi", "/sys/firmware") if os.path.isdir(p)]
    need(bool(files) and bool(dirs), "no masked path exists on this kernel")

    def look() -> Report:
        with open("/proc/sys/kernel/hostname") as f:
            hostname = f.read()
        return {
            "files": {p: try_read(p) for p in files},
            "dirs": {p: os.listdir(p) for p in dirs},
            "dir_write": {p: try_write(p + "/x") for p in dirs},
            # A new UTS namespace: even a wrong answer would not touch the host's name.
            "sysctl": try_write("/proc/sys/kernel/hostname", hostname.encode()),
            "proc_sys": at("/proc/sys"),
            "proc_fs": at("/proc/fs"),
            "missing_ro": at("/proc/sysrq-trigger") if not os.path.exists("/proc/sysrq-trigger")
            else None,
            "proc_write": try_write("/proc/self/comm", b"podium"),
        }

    report = expect_ok(run_in_container(config, look))
    assert report["files"] == {p: 0 for p in files}  # /dev/null bound over them
    assert report["dirs"] == {p: [] for p in dirs}  # an empty read-only tmpfs
    assert report["dir_write"] == {p: "EROFS" for p in dirs}
    assert report["sysctl"] == "EROFS"
    assert report["proc_sys"][0]["opts"].startswith("ro,")
    assert report["proc_fs"][0]["opts"].startswith("ro,")
    assert report["missing_ro"] in (None, [])  # a path the kernel lacks is skipped
    assert report["proc_write"] == "ok"  # the rest of /proc stays writable


def test_bind_ro_file_bind_and_tmpfs_options(busybox_rootfs: Path, tmp_dir: Path) -> None:
    data = tmp_dir / "data"
    data.mkdir()
    (data / "in").write_text("from the host")
    conf = tmp_dir / "podium.conf"
    conf.write_text("key=value\n")
    mounts = (*RUNC_MOUNTS,
              Mount("/data", "bind", str(data), ("rbind", "ro", "nosuid", "nodev")),
              Mount("/etc/podium/podium.conf", "bind", str(conf), ("bind", "ro")),
              Mount("/run", "tmpfs", "tmpfs", ("nosuid", "noexec", "size=1m", "mode=700")),
              Mount("/mnt/rw", "", str(data), ("rbind", "rprivate")))
    config = config_for(overlay_root(busybox_rootfs, tmp_dir), mounts=mounts)

    def look() -> Report:
        with open("/data/in") as f:
            seen = f.read()
        with open("/etc/podium/podium.conf") as f:
            conf_text = f.read()
        return {
            "seen": seen, "conf": conf_text,
            "data_write": try_write("/data/new"),
            "conf_write": try_write("/etc/podium/podium.conf"),
            "rw_write": try_write("/mnt/rw/written"),
            "data": at("/data"), "run": at("/run"), "rw": at("/mnt/rw"),
            "run_mode": stat.S_IMODE(os.stat("/run").st_mode),
        }

    report = expect_ok(run_in_container(config, look))
    assert report["seen"] == "from the host" and report["conf"] == "key=value\n"
    assert report["data_write"] == "EROFS" and report["conf_write"] == "EROFS"
    assert report["rw_write"] == "ok" and (data / "written").exists()
    assert {"ro", "nosuid", "nodev"} <= set(report["data"][0]["opts"].split(","))
    run = report["run"][0]
    assert run["fstype"] == "tmpfs" and {"nosuid", "noexec"} <= set(run["opts"].split(","))
    assert "size=1024k" in run["super"] and report["run_mode"] == 0o700
    assert "shared:" not in report["rw"][0]["tags"]
    # The file's mount point was made in the container's upper dir, not in the image.
    assert (tmp_dir / "upper" / "etc" / "podium" / "podium.conf").is_file()
    assert not (busybox_rootfs / "etc" / "podium").exists()


def test_readonly_root(busybox_rootfs: Path, tmp_dir: Path) -> None:
    # A bind root: the shared image itself, safe because it is read-only inside.
    config = config_for(Root(path=busybox_rootfs, readonly=True))

    def look() -> Report:
        return {"etc": try_write("/etc/podium-nope"), "tmp": try_write("/tmp/podium-nope"),
                "shm": try_write("/dev/shm/ok"), "root": at("/"),
                "old_root_visible": os.path.exists(str(tmp_dir))}

    report = expect_ok(run_in_container(config, look))
    assert report["etc"] == "EROFS" and report["tmp"] == "EROFS"
    assert report["shm"] == "ok"
    assert report["root"][0]["opts"].startswith("ro")
    assert not report["old_root_visible"]
    assert not (busybox_rootfs / "etc" / "podium-nope").exists()


def test_overlay_root_readonly(busybox_rootfs: Path, tmp_dir: Path) -> None:
    config = config_for(overlay_root(busybox_rootfs, tmp_dir, readonly=True))

    def look() -> Report:
        return {"etc": try_write("/etc/podium-nope")}

    assert expect_ok(run_in_container(config, look))["etc"] == "EROFS"
    assert not (tmp_dir / "upper" / "etc").exists()


def test_symlinks_in_the_image_cannot_escape(busybox_rootfs: Path, tmp_dir: Path) -> None:
    layer = tmp_dir / "layer"
    layer.mkdir()
    (layer / "evil").symlink_to("/etc")
    (layer / "up").symlink_to("../../../../../../..")
    mounts = (*RUNC_MOUNTS,
              Mount("/evil/podium-escape", "tmpfs", "tmpfs"),
              Mount("/up/tmp/podium-up", "tmpfs", "tmpfs"))
    config = config_for(overlay_root(busybox_rootfs, tmp_dir, layer), mounts=mounts)

    def look() -> Report:
        return {"escape": at("/etc/podium-escape"), "up": at("/tmp/podium-up")}

    report = expect_ok(run_in_container(config, look))
    assert [m["fstype"] for m in report["escape"]] == ["tmpfs"]
    assert [m["fstype"] for m in report["up"]] == ["tmpfs"]
    assert not Path("/etc/podium-escape").exists()
    assert not Path("/tmp/podium-up").exists()
    assert (tmp_dir / "upper" / "etc" / "podium-escape").is_dir()


def test_overlay_layer_with_colon_in_name(busybox_rootfs: Path, tmp_dir: Path) -> None:
    layer = tmp_dir / "sha256:0123abcd"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "from-layer").write_text("layer")
    config = config_for(overlay_root(busybox_rootfs, tmp_dir, layer))

    def look() -> Report:
        with open("/etc/from-layer") as f:
            return {"text": f.read(), "busybox": os.path.exists("/bin/busybox")}

    report = expect_ok(run_in_container(config, look))
    assert report == {"ok": True, "text": "layer", "busybox": True}


def test_rshared_root_stays_off_the_host(busybox_rootfs: Path, tmp_dir: Path) -> None:
    config = config_for(overlay_root(busybox_rootfs, tmp_dir), rootfs_propagation="rshared")

    def look() -> Report:
        return {"root": at("/")}

    report = expect_ok(run_in_container(config, look))
    assert "shared:" in report["root"][0]["tags"]


def test_default_propagation_is_private(busybox_rootfs: Path, tmp_dir: Path) -> None:
    config = config_for(overlay_root(busybox_rootfs, tmp_dir))

    def look() -> Report:
        return {"tags": [m["tags"] for m in mountinfo()]}

    report = expect_ok(run_in_container(config, look))
    assert not any("shared:" in t or "master:" in t for t in report["tags"])


CGROUP_MOUNT = Mount("/sys/fs/cgroup", "cgroup", "cgroup",
                     ("nosuid", "noexec", "nodev", "relatime", "ro"))


UNIFIED = Path("/sys/fs/cgroup/unified")


def as_cgroup2_host(sys: sc.Syscalls) -> None:
    """In the test's own mount namespace, make a hybrid host look like a v2 one.

    The unified hierarchy bound over /sys/fs/cgroup is what a v2 host has there, and
    the process's "0::" cgroup is relative to it, so the v2 code runs for real.
    """
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return
    sys.mount("", "/", None, sc.MS_REC | sc.MS_PRIVATE, None)  # keep it off the host
    sys.mount(str(UNIFIED), "/sys/fs/cgroup", None, sc.MS_BIND, None)


def cgroup2_available() -> bool:
    return (Path("/sys/fs/cgroup/cgroup.controllers").exists()
            or (UNIFIED / "cgroup.controllers").exists())


def test_cgroup_mount_binds_own_cgroup(busybox_rootfs: Path, tmp_dir: Path) -> None:
    config = config_for(overlay_root(busybox_rootfs, tmp_dir), mounts=(*RUNC_MOUNTS, CGROUP_MOUNT))

    def look() -> Report:
        return {"cg": at("/sys/fs/cgroup"), "write": try_write("/sys/fs/cgroup/cgroup.procs"),
                "procs": os.path.exists("/sys/fs/cgroup/cgroup.procs")}

    if not cgroup2_available():
        report = run_in_container(config, look)
        assert not report["ok"]  # a pure v1 host: refused, with the reason
        assert "mount cgroup on /sys/fs/cgroup: only cgroup v2" in report["error"]
        return
    report = expect_ok(run_in_container(config, look, before=as_cgroup2_host))
    with open("/proc/self/cgroup") as f:
        own = next(line[3:].strip() for line in f if line.startswith("0::"))
    cg = report["cg"][-1]
    assert cg["fstype"] == "cgroup2" and cg["opts"].startswith("ro")
    assert cg["root"] == own
    assert report["procs"] and report["write"] == "EROFS"


def test_cgroup_v1_host_is_refused(busybox_rootfs: Path, tmp_dir: Path) -> None:
    config = config_for(overlay_root(busybox_rootfs, tmp_dir), mounts=(*RUNC_MOUNTS, CGROUP_MOUNT))

    def hide_cgroup2(sys: sc.Syscalls) -> None:
        sys.mount("", "/", None, sc.MS_REC | sc.MS_PRIVATE, None)
        sys.mount("tmpfs", "/sys/fs/cgroup", "tmpfs", 0, "size=16k")

    report = run_in_container(config, lambda: {}, before=hide_cgroup2)
    assert not report["ok"]
    assert report["error"] == ("SetupError: mount cgroup on /sys/fs/cgroup: only cgroup v2 hosts "
                               "can mount cgroups inside a container; drop this mount")


def test_cgroup_mount_with_cgroupns(busybox_rootfs: Path, tmp_dir: Path) -> None:
    need(cgroup2_available(), "needs a cgroup v2 hierarchy")
    config = config_for(overlay_root(busybox_rootfs, tmp_dir), mounts=(*RUNC_MOUNTS, CGROUP_MOUNT),
                        namespaces=(Namespace("cgroup"),))

    def look() -> Report:
        return {"cg": at("/sys/fs/cgroup"), "procs": os.path.exists("/sys/fs/cgroup/cgroup.procs")}

    report = expect_ok(run_in_container(config, look, extra_flags=sc.CLONE_NEWCGROUP,
                                        before=as_cgroup2_host))
    assert report["cg"][-1]["fstype"] == "cgroup2" and report["cg"][-1]["root"] == "/"
    assert report["procs"]


def test_user_namespace_falls_back_to_binds(busybox_rootfs: Path) -> None:
    # In a user namespace mknod is refused and sysfs (without a network namespace)
    # too: host nodes and the host's /sys are bound instead, and the read-only
    # remounts must keep the flags the host locked.
    # devpts without gid=5: that group is not mapped in the namespace.
    mounts = tuple(m for m in RUNC_MOUNTS if m.type != "devpts")
    config = config_for(Root(path=busybox_rootfs, readonly=True), mounts=mounts)

    def look() -> Report:
        st = os.stat("/dev/null")
        return {"null": try_write("/dev/null"), "zero": try_read("/dev/zero", 8),
                "null_dev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
                "null_mount": at("/dev/null"), "sys": at("/sys"),
                "sysctl": try_write("/proc/sys/kernel/hostname", b"podium"),
                "etc": try_write("/etc/podium-nope")}

    report = expect_ok(run_in_container(config, look, userns=True, extra_flags=sc.CLONE_NEWIPC))
    assert report["null"] == "ok" and report["zero"] == 8
    assert report["null_dev"] == [1, 3]
    assert report["null_mount"], "/dev/null should be a bind of the host's node"
    assert report["sys"][0]["fstype"] == "sysfs" and report["sys"][-1]["opts"].startswith("ro")
    assert report["sysctl"] == "EROFS"
    assert report["etc"] == "EROFS"


def test_failure_is_a_setup_error_naming_the_mount(busybox_rootfs: Path, tmp_dir: Path) -> None:
    mounts = (*RUNC_MOUNTS, Mount("/data", "bind", str(tmp_dir / "missing"), ("ro",)))
    config = config_for(overlay_root(busybox_rootfs, tmp_dir), mounts=mounts)
    report = run_in_container(config, lambda: {})
    assert not report["ok"]
    assert report["error"] == (f"{SetupError.__name__}: bind {tmp_dir}/missing on /data: "
                               "No such file or directory")
