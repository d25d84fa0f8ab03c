"""What ``podium`` says about itself: every command's ``--help`` ends with examples
of its use, and ``podium version`` gives the client's version and the server's state."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from client.cli import VERSION, build_parser, main
from tests.support.cluster import running_scheduler


def commands(parser: argparse.ArgumentParser, path: str = "podium"
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(how it is typed, its parser) for the parser and every command under it."""
    yield path, parser
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if id(child) not in seen:  # aliases share their command's parser
                    seen.add(id(child))
                    yield from commands(child, f"{path} {name}")


def test_the_walk_finds_every_command() -> None:
    found = {path for path, _ in commands(build_parser())}
    for path in ("podium get", "podium image pull", "podium top pods", "podium top nodes",
                 "podium completion", "podium version", "podium up", "podium down"):
        assert path in found
    assert "podium top po" not in found  # an alias is not a second command


def without_examples(parser: argparse.ArgumentParser) -> list[str]:
    """The commands whose epilog has no ``examples:`` section with a line that uses
    the command (sudo and shell around it allowed: ``source <(podium completion bash)``)."""
    missing = []
    for path, command in commands(parser):
        _, found, examples = (command.epilog or "").partition("examples:\n")
        if not found or not any(path in line for line in examples.splitlines()):
            missing.append(path)
    return missing


def test_every_command_has_examples_that_use_it() -> None:
    assert without_examples(build_parser()) == []


def test_a_command_without_examples_is_found() -> None:
    parser = argparse.ArgumentParser(prog="podium", epilog="examples:\n  podium get pods\n")
    sub = parser.add_subparsers()
    sub.add_parser("get", epilog="examples:\n  podium get pods\n")
    sub.add_parser("logs", epilog="see podium logs --help")
    sub.add_parser("exec", epilog="examples:\n  podium logs web-1\n")  # not its own
    sub.add_parser("scale")
    assert without_examples(parser) == ["podium logs", "podium exec", "podium scale"]


@pytest.mark.parametrize("argv", [["top", "pods"], ["top", "nodes"], ["completion"],
                                  ["image", "pull"], ["version"]])
def test_help_prints_the_examples_one_per_line(argv: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    _, _, examples = out.partition("examples:\n")
    # Raw formatting keeps each example on its own line, as written.
    assert f"\n  podium {' '.join(argv)}" in f"\n{examples}"


def test_version_with_and_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "--client", "--server", "127.0.0.1:1"]) == 0
    assert capsys.readouterr() == (f"Client Version: {VERSION}\n", "")
    assert main(["version", "--server", "127.0.0.1:1"]) == 1
    out, err = capsys.readouterr()
    assert out == f"Client Version: {VERSION}\nServer Version: unknown (not reachable)\n"
    assert err.startswith("podium: cannot reach the scheduler at 127.0.0.1:1")
    with running_scheduler() as scheduler:
        address = f"127.0.0.1:{scheduler.port}"
        assert main(["version", "--server", address]) == 0
    out, err = capsys.readouterr()
    # The scheduler reports no version of its own; the line says it answered.
    assert out.splitlines() == [f"Client Version: {VERSION}",
                                f"Server Version: unknown (the scheduler at {address} "
                                "answers but does not report its version)"]
