"""podium-agent's command line: defaults, and --scheduler refused plainly."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from agent.cli import main, parser


def test_defaults_follow_the_design() -> None:
    args = parser().parse_args([])
    assert args.listen == "0.0.0.0:7401"
    assert args.root == Path("/run/podium")
    assert args.pod_cidr == IPv4Network("10.88.0.0/24")
    assert args.bridge == "podium0" and args.cgroup_parent == "podium"
    assert args.image_store == Path("/var/lib/podium/images")


def test_scheduler_is_refused_until_it_exists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scheduler", "127.0.0.1:7400"]) == 2
    assert "the scheduler is not available yet" in capsys.readouterr().err


def test_a_bad_cidr_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--pod-cidr", "10.88.0.0/33"])
    assert stopped.value.code == 2
    assert "--pod-cidr" in capsys.readouterr().err
