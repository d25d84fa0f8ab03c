"""The fork server's interpreter imports only what its children need: every module
with an at-fork handler runs that handler in every shim and helper it forks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What the server's interpreter holds once warm (``runtime.forkserver._BOOT`` imports
# the module, ``serve`` warms it up before the first request).
_SERVER = """
import sys
import runtime.forkserver
runtime.forkserver._warm()
print(" ".join(sorted(sys.modules)))
"""


def test_the_fork_server_leaves_out_modules_with_at_fork_handlers() -> None:
    out = subprocess.run([sys.executable, "-c", _SERVER], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.split()
    # threading's handler alone delays each forked child's first step by ~0.4 ms
    # (subprocess imports threading); logging's and random's run in every child too.
    unwanted = {"threading", "subprocess", "logging", "random"} & set(out)
    assert not unwanted, f"imported by the fork server: {sorted(unwanted)}"
