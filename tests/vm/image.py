"""The VM tier's guest image, built from Debian's packages and cached outside the repo.

Three files, made once per set of inputs (a hash of the kernel package, the
package list and the guest files names the cache entry):

- ``vmlinux``: Debian's kernel (``apt-get download linux-image-*-amd64``), the
  uncompressed image taken from vmlinuz's xz payload: QEMU boots it through the
  PVH entry, seconds faster than vmlinuz.
- ``initrd.img``: static busybox and the modules the root disk and the 9p shares
  need (Debian builds virtio_blk, ext4, 9p and overlay as modules), loaded
  dependencies first.
- ``disk.img``: a ``debootstrap --variant=minbase`` bookworm root filesystem with
  systemd, made into ext4 by ``mkfs.ext4 -d`` (no loop mount). Guests share it
  read-only (``snapshot=on``).

Run ``python -m tests.vm.image`` as root to build (or find) it and print its paths.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("PODIUM_VM_CACHE", "/var/cache/podium-vm"))
SUITE = "bookworm"
GUEST = Path(__file__).resolve().parent / "guest"
# What the tests need in a guest; provision.sh finds these installed and so needs
# no network there.
PACKAGES = ("systemd-sysv", "udev", "kmod", "iproute2", "nftables", "procps",
            "busybox-static", "python3", "python3-venv", "libseccomp2")
# The initrd loads these (and what they depend on); the rest stay on the root disk.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4",
                  "9pnet_virtio", "9p", "overlay")
# Module folders copied to the root disk: networking, filesystems and virtio, not
# the hundreds of megabytes of hardware drivers a guest never sees.
MODULE_DIRS = ("arch", "crypto", "fs", "lib", "net", "drivers/virtio", "drivers/block",
               "drivers/net/virtio_net.ko", "drivers/net/net_failover.ko",
               "drivers/net/veth.ko", "drivers/net/dummy.ko", "drivers/net/macvlan.ko",
               "drivers/net/vxlan", "drivers/net/tun.ko")
# Units a test guest does not need, masked so they cost no boot time.
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
          "e2scrub_reap.service", "getty@tty1.service", "serial-getty@ttyS0.service",
          "systemd-timesyncd.service")
DISK_SPARE_MB = 2048


class ImageError(RuntimeError):
    """Building the guest image failed; the message names the step."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    disk: Path
    kernel_release: str


def _run(argv: list[str], what: str, **kw: object) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ImageError(f"{what} failed ({' '.join(argv[:3])}): {' | '.join(tail)}")
    return str(proc.stdout)


def kernel_package() -> tuple[str, str]:
    """The current Debian kernel package's name and version (linux-image-amd64's target)."""
    depends = _run(["apt-cache", "depends", "linux-image-amd64"], "apt-cache depends")
    names = [line.split(":", 1)[1].strip() for line in depends.splitlines()
             if line.strip().startswith("Depends: linux-image-")]
    if not names:
        raise ImageError("apt-cache knows no linux-image-amd64: run apt-get update first")
    policy = _run(["apt-cache", "policy", names[0]], "apt-cache policy")
    version = next((line.split(":", 1)[1].strip() for line in policy.splitlines()
                    if line.strip().startswith("Candidate:")), "")
    return names[0], version


def image_key(kernel: tuple[str, str]) -> str:
    h = hashlib.sha256()
    for part in (SUITE, *kernel, *PACKAGES, *INITRD_MODULES, *MODULE_DIRS, *MASKED,
                 str(DISK_SPARE_MB), os.environ.get("DEBIAN_MIRROR", "")):
        h.update(part.encode() + b"\0")
    h.update(Path(__file__).read_bytes())
    for f in sorted(GUEST.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def ensure_image(cache: Path = CACHE, log: Path | None = None) -> GuestImage:
    """The cached image for the current inputs, built first if missing (as root)."""
    cache.mkdir(parents=True, exist_ok=True)
    kernel = kernel_package()
    key = image_key(kernel)
    final = cache / f"image-{key}"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse
        if not (final / "done").is_file():
            work = cache / f"image-{key}.tmp"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            _build(work, kernel[0], log or cache / "build.log")
            (work / "done").write_text(key + "\n")
            work.rename(final)
            for old in cache.glob("image-*"):  # keep one image: each is ~1 GB of disk
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
    release = (final / "release").read_text().strip()
    return GuestImage(final / "vmlinux", final / "initrd.img", final / "disk.img", release)


def _build(work: Path, package: str, log: Path) -> None:
    rootfs = work / "rootfs"
    _debootstrap(rootfs, log)
    release = _install_kernel(work, package, rootfs)
    (work / "release").write_text(release + "\n")
    _configure(rootfs)
    _initrd(rootfs, release, work / "initrd.img")
    _mkfs(rootfs, work / "disk.img")
    shutil.rmtree(rootfs)


def _debootstrap(rootfs: Path, log: Path) -> None:
    mirror = os.environ.get("DEBIAN_MIRROR", "")  # empty: debootstrap's default
    argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            SUITE, str(rootfs), *([mirror] if mirror else [])]
    with open(log, "w") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise ImageError(f"debootstrap {SUITE} failed (exit {proc.returncode}): see {log}")
    # Package lists and downloaded .debs are no use in a guest without a network.
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _install_kernel(work: Path, package: str, rootfs: Path) -> str:
    """Unpack the kernel package; keep vmlinux, copy the modules a guest uses."""
    _run(["apt-get", "download", package], "apt-get download", cwd=work)
    deb = next(work.glob(f"{package}_*.deb"))
    unpacked = work / "kernel"
    _run(["dpkg-deb", "-x", str(deb), str(unpacked)], "dpkg-deb -x")
    vmlinuz = next((unpacked / "boot").glob("vmlinuz-*"))
    release = vmlinuz.name.removeprefix("vmlinuz-")
    (work / "vmlinux").write_bytes(vmlinux_from(vmlinuz.read_bytes(), vmlinuz))
    src = unpacked / "lib/modules" / release
    dst = rootfs / "lib/modules" / release
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    for part in MODULE_DIRS:
        s, d = src / "kernel" / part, dst / "kernel" / part
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d)
        elif s.is_file():
            shutil.copy2(s, d)
    _run(["chroot", str(rootfs), "depmod", release], "depmod in the root filesystem")
    shutil.rmtree(unpacked)
    deb.unlink()
    return release


def vmlinux_from(vmlinuz: bytes, where: Path) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz-compressed."""
    start = vmlinuz.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise ImageError(f"{where}: no xz payload (is the kernel compressed otherwise?)")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
    if not elf.startswith(b"\x7fELF"):
        raise ImageError(f"{where}: the xz payload is not an ELF image")
    return elf


def module_order(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """The .ko paths to load for ``wanted``, each after what it depends on."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise ImageError(f"module {name} is not in modules.dep (built in, or renamed?)")
        visit(by_name[name])
    return order


def _initrd(rootfs: Path, release: str, out: Path) -> None:
    moddir = rootfs / "lib/modules" / release
    order = module_order((moddir / "modules.dep").read_text(), INITRD_MODULES)
    tree = out.parent / "initrd"
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib/modules"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(rootfs / "bin/busybox", tree / "bin/busybox")
    names = []
    for ko in order:
        shutil.copy2(moddir / ko, tree / "lib/modules" / Path(ko).name)
        names.append(Path(ko).name)
    (tree / "lib/modules/modules.order").write_text("\n".join(names) + "\n")
    shutil.copy2(GUEST / "init", tree / "init")
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    archive = _run_bytes(["cpio", "-o", "-H", "newc", "--quiet"], "\n".join(files).encode(),
                         tree)
    out.write_bytes(gzip.compress(archive, compresslevel=6))
    shutil.rmtree(tree)


def _run_bytes(argv: list[str], stdin: bytes, cwd: Path) -> bytes:
    proc = subprocess.run(argv, input=stdin, capture_output=True, cwd=cwd)
    if proc.returncode != 0:
        raise ImageError(f"{argv[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _configure(rootfs: Path) -> None:
    """Make the root filesystem a test guest: the mailbox service, nothing that waits."""
    etc = rootfs / "etc"
    (etc / "fstab").write_text("/dev/vda / ext4 rw,noatime 0 0\n")
    (etc / "hostname").unlink(missing_ok=True)  # the kernel command line names each guest
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    sbin = rootfs / "usr/local/sbin"
    shutil.copy2(GUEST / "podium-vm-boot", sbin / "podium-vm-boot")
    units = etc / "systemd/system"
    shutil.copy2(GUEST / "podium-vm.service", units / "podium-vm.service")
    wants = units / "multi-user.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "podium-vm.service").symlink_to("/etc/systemd/system/podium-vm.service")
    for unit in MASKED:
        link = units / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # A guest whose boot goes wrong powers off instead of offering a shell.
    for target in ("emergency.target", "rescue.target"):
        (units / target).symlink_to("/lib/systemd/system/poweroff.target")
    (etc / "machine-id").write_text("")  # each boot makes its own


def _mkfs(rootfs: Path, disk: Path) -> None:
    used = int(_run(["du", "-s", "--block-size=1M", str(rootfs)], "du").split()[0])
    with open(disk, "wb") as f:
        f.truncate((used + DISK_SPARE_MB) * 1024 * 1024)
    _run(["mkfs.ext4", "-q", "-F", "-L", "podium-root", "-d", str(rootfs), str(disk)],
         "mkfs.ext4 -d")


if __name__ == "__main__":
    img = ensure_image()
    print(img.kernel, img.initrd, img.disk, img.kernel_release)
    sys.exit(0)
