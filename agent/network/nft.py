"""Running ``nft`` in a network namespace: the one way podium changes nftables.

Scripts go to ``nft -f -`` (one transaction each); reads use ``nft -j``.
pyroute2's nftables support is too thin for NAT expressions.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from agent.errors import NetworkError
from agent.network.netns import run_in_netns


def run_nft(args: list[str], *, what: str, stdin: str | None = None,
            netns: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``nft ARGS`` in ``netns`` (None: the caller's); a NetworkError naming ``what``
    (e.g. the table) and nft's own error line if it fails and ``check``."""
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        raise NetworkError("nft: command not found (install the nftables package)")

    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run([nft, *args], input=stdin, capture_output=True, text=True)

    done = run_in_netns(netns, call)
    if check and done.returncode != 0:
        error = next((line for line in done.stderr.splitlines() if "Error" in line),
                     done.stderr.strip() or f"exit status {done.returncode}")
        raise NetworkError(f"{what}: nft {' '.join(args)}: {error}")
    return done
