"""The fork server's interpreter imports only what its children need: every module
with an at-fork handler runs that handler in every shim and helper it forks."""

from __future__ import annotations

from tests.support.imports import modules_after

# What the server's interpreter holds once warm (``runtime.forkserver._BOOT`` imports
# the module, ``serve`` warms it up before the first request).
_SERVER = """
import runtime.forkserver
runtime.forkserver._warm()
"""


def test_the_fork_server_leaves_out_modules_with_at_fork_handlers() -> None:
    # threading's handler alone delays each forked child's first step by ~0.4 ms
    # (subprocess imports threading); logging's and random's run in every child too.
    unwanted = {"threading", "subprocess", "logging", "random"} & modules_after(_SERVER)
    assert not unwanted, f"imported by the fork server: {sorted(unwanted)}"
