"""Base images made on the node, without a registry: the busybox root filesystem.

    from runtime.images.bases import busybox_rootfs
    busybox_rootfs(Path("/tmp/rootfs"))     # /bin/busybox, an applet link each, /etc

The rootfs comes from Debian's ``busybox-static`` (one static binary, so nothing
else from the host is needed). ``make busybox-image`` tars it and imports it as
``busybox:latest``; the tests use it as their container root.

    python -m runtime.images.bases DEST
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
         "var/www", "home/user")


def find_busybox() -> Path:
    """The static busybox binary, or FileNotFoundError saying how to get it."""
    for candidate in (BUSYBOX, Path("/usr/bin/busybox")):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("busybox not found: install Debian's busybox-static (make setup)")


def busybox_rootfs(dest: Path) -> Path:
    """Make (or refresh) a busybox root filesystem at ``dest`` and return it."""
    busybox = find_busybox()
    dest.mkdir(parents=True, exist_ok=True)
    # A root filesystem is world-readable; a mapped root in a user namespace must get in.
    os.chmod(dest, 0o755)
    for d in _DIRS:
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    target = dest / "bin" / "busybox"
    if not target.exists():
        shutil.copy2(busybox, target)
    applets = subprocess.run(
        [str(busybox), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = dest / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "user:x:1000:1000:user:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
    os.chown(dest / "home" / "user", 1000, 1000)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m runtime.images.bases DEST")
    print(busybox_rootfs(Path(sys.argv[1])))
