"""README's first command: deploy/demo.sh runs to the end, shows three pods
answering with their own names, directly and through a Service reached by its
DNS name, a container coming back and a pod replaced,
and leaves nothing behind (the leak fixture checks). Its agent runs in a
network namespace the test makes, with a test bridge and cgroup parent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.network import create_netns, remove_netns
from tests.conftest import need, need_root

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_a_cluster_and_cleans_up(tmp_dir: Path, cgroup_parent: str) -> None:
    need_root()
    need(shutil.which("nft") is not None, "needs nft (apt-get install nftables)")
    netns = tmp_dir / "ptdemo"
    create_netns(netns)
    try:
        env = {**os.environ, "PODIUM_DEMO_BRIDGE": "ptdemo0",
               "PODIUM_DEMO_CGROUP": f"{cgroup_parent}/demo", "PODIUM_DEMO_NETNS": str(netns)}
        done = subprocess.run(["bash", "deploy/demo.sh"], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=240)
    finally:
        remove_netns(netns)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    answers = re.findall(r"^hello from (hello-\S+)$", done.stdout, re.MULTILINE)
    assert len(set(answers)) == 3, output[-5000:]
    # The Service step: six requests by name, every one answered by one of the pods.
    by_name = done.stdout.split("six requests:", 1)[1].split("\n== ", 1)[0]
    answered = re.findall(r"^hello from (hello-\S+)$", by_name, re.MULTILINE)
    assert len(answered) == 6 and set(answered) <= set(answers), by_name
    assert "Done." in done.stdout
