"""``podium-runtime``'s argument parsing: the command found before argparse runs, and
the parser built for that command alone reading arguments as the full one does."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from runtime.cli import _COMMANDS, _command_of, _parser
from runtime.cli.warm import own_cgroup_procs


@pytest.mark.parametrize(("argv", "command"), [
    (["run", "x"], "run"),
    (["--root", "/r", "--cgroup-parent", "p", "create", "-b", "b", "x"], "create"),
    (["--log", "/l", "--log-format", "json", "--debug", "kill", "x", "KILL"], "kill"),
    (["--systemd-cgroup", "exec", "x", "sh", "-c", "run"], "exec"),
    (["--root=/r", "delete", "-f", "x"], "delete"),
    (["--help"], None),
    ([], None),
    (["--root"], None),
    (["bogus", "x"], "bogus"),
])
def test_the_command_word_is_found_past_the_global_options(
        argv: list[str], command: str | None) -> None:
    assert _command_of(argv) == command


def _outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[str, str]:
    """What parsing ``argv`` gives (the namespace without the usage hook), or prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            args = vars(parser.parse_args(argv))
        except SystemExit as e:
            return f"exit {e.code}", out.getvalue()
    args.pop("usage", None)
    return repr(sorted(args.items())), out.getvalue()


@pytest.mark.parametrize("argv", [
    ["run", "--bundle", "b", "-d", "--pid-file", "p", "x"],
    ["--root", "/r", "create", "--console-socket", "s", "x"],
    ["exec", "-t", "-e", "A=1", "--cwd", "/", "x", "sh", "-c", "exit 3"],
    ["kill", "--all", "x", "9"],
    ["list", "-q", "-f", "json"],
    ["events", "--stats", "--interval", "2", "x"],
    ["run", "--help"],
    ["run", "--no-such-option", "x"],
    ["--help"],
    ["bogus"],
    ["state"],
])
def test_the_parser_for_one_command_reads_as_the_full_one(argv: list[str]) -> None:
    assert _outcome(_parser(_command_of(argv)), argv) == _outcome(_parser(), argv)


def test_every_command_has_its_sub_parser() -> None:
    for name in _COMMANDS:
        assert _outcome(_parser(name), [name, "--help"])[0] == "exit 0"


def test_own_cgroups_are_read_from_proc_self_cgroup() -> None:
    hybrid = ("12:pids:/user.slice\n4:cpu,cpuacct:/\n1:name=systemd:/init.scope\n"
              "0::/init.scope\n")
    assert own_cgroup_procs(hybrid, "/cg") == [
        "/cg/pids/user.slice/cgroup.procs", "/cg/cpu,cpuacct/cgroup.procs",
        "/cg/systemd/init.scope/cgroup.procs", "/cg/unified/init.scope/cgroup.procs",
        "/cg/init.scope/cgroup.procs"]
    assert own_cgroup_procs("0::/\n", "/cg") == ["/cg/unified/cgroup.procs", "/cg/cgroup.procs"]
    assert own_cgroup_procs("garbage\n\n", "/cg") == []
