"""deploy/provision.sh refuses bad arguments before it changes anything."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "provision.sh"
GOOD = ["--role", "worker", "--scheduler", "192.168.56.10:7400", "--node-name", "worker-1"]


BASH = shutil.which("bash") or "/bin/bash"
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def provision(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The script, on a PATH of harmless tools only: no apt-get, systemctl, modprobe or
    pip. Were a check to pass by mistake, the script would stop at its last check (no
    apt-get) instead of touching this machine."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for tool in ("dirname", "id", "sed", "cat"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True,
                              env={"PATH": str(bin_dir)}, timeout=30)
    return run


def with_value(option: str, value: str) -> list[str]:
    args = list(GOOD)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    return args


def without(option: str) -> list[str]:
    i = GOOD.index(option)
    return GOOD[:i] + GOOD[i + 2:]


@pytest.mark.parametrize(("args", "named"), [
    (without("--role"), "missing --role"),
    (without("--scheduler"), "missing --scheduler"),
    (without("--node-name"), "missing --node-name"),
    (with_value("--role", "boss"), "--role 'boss'"),
    (with_value("--scheduler", "192.168.56.10"), "--scheduler '192.168.56.10'"),
    (with_value("--scheduler", "host:99999"), "--scheduler 'host:99999'"),
    (with_value("--node-name", "Worker_1"), "--node-name 'Worker_1'"),
    (with_value("--node-ip", "192.168.56.300"), "--node-ip '192.168.56.300'"),
    (with_value("--pod-cidr", "10.88.1.0/33"), "--pod-cidr '10.88.1.0/33'"),
    (with_value("--wheelhouse", "/nonexistent/wheels"), "--wheelhouse '/nonexistent/wheels'"),
    (with_value("--source", "/nonexistent/src"), "--source '/nonexistent/src'"),
    ([*GOOD, "--no-agent"], "--no-agent: only for --role control"),
    ([*GOOD, "--eviction-timeout", "soon"], "--eviction-timeout 'soon'"),
    ([*GOOD, "--eviction-timeout", "60"], "--eviction-timeout: only for --role control"),
    ([*GOOD, "--frobnicate"], "unknown argument '--frobnicate'"),
    ([*GOOD, "--node-ip"], "--node-ip needs a value"),
])
def test_a_bad_argument_is_named_and_nothing_runs(provision: Run, args: list[str],
                                                   named: str) -> None:
    r = provision(*args)
    assert r.returncode == 2
    assert named in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""  # it said nothing of installing or writing


def test_a_wheelhouse_without_podium_is_refused(provision: Run, tmp_path: Path) -> None:
    (tmp_path / "grpcio-1.0-py3-none-any.whl").write_text("")
    r = provision(*with_value("--wheelhouse", str(tmp_path)))
    assert r.returncode == 2 and "holds no podium-*.whl" in r.stderr


def test_good_arguments_pass_every_argument_check(provision: Run, tmp_path: Path) -> None:
    (tmp_path / "podium-0.1.0-py3-none-any.whl").write_text("")
    r = provision(*with_value("--wheelhouse", str(tmp_path)), "--node-ip", "192.168.56.11",
                  "--pod-cidr", "10.88.1.0/24")
    # Only the checks of the machine itself are left (not root, or no apt-get here).
    assert r.returncode == 2
    assert "must run as root" in r.stderr or "needs apt-get and systemd" in r.stderr


def test_the_script_parses() -> None:
    assert subprocess.run([BASH, "-n", str(SCRIPT)]).returncode == 0


def test_the_vm_tier_provisions_as_the_vagrantfile_does() -> None:
    """tests/vm boots its guests with the arguments the Vagrantfile derives from each
    node's index: the same script, addresses, port, names and pod CIDRs."""
    from tests.vm.nodes import provision_args

    text = (SCRIPT.parents[1] / "Vagrantfile").read_text()
    for line in ('SUBNET = ENV.fetch("PODIUM_SUBNET", "192.168.56")',
                 'SCHEDULER = "#{SUBNET}.10:7400"',
                 '"--node-ip", "#{SUBNET}.#{10 + index}"',
                 '"--pod-cidr", "10.88.#{10 + index}.0/24"',
                 'index.zero? ? "control" : "worker-#{index}"',
                 'inline: "bash /podium/deploy/provision.sh #{provision_args(index).join(\' \')}"',
                 'args += ["--eviction-timeout", EVICTION_TIMEOUT] if index.zero? && '
                 '!EVICTION_TIMEOUT.empty?'):
        assert line in text, line
    assert provision_args(0)[:2] == ["--role", "control"]
    assert provision_args(2) == ["--role", "worker", "--scheduler", "192.168.56.10:7400",
                                 "--node-name", "worker-2", "--node-ip", "192.168.56.12",
                                 "--pod-cidr", "10.88.12.0/24"]
