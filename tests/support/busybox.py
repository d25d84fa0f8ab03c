"""The busybox root filesystem the tests run containers in (built by the product).

    python -m tests.support.busybox DEST

``make_rootfs`` is ``runtime.images.bases.busybox_rootfs``: the same tree that
``make busybox-image`` imports as ``busybox:latest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime.images.bases import BUSYBOX, busybox_rootfs, find_busybox

make_rootfs = busybox_rootfs

__all__ = ["BUSYBOX", "find_busybox", "make_rootfs"]

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.busybox DEST")
    print(make_rootfs(Path(sys.argv[1])))
