"""``podium completion``: the scripts are made from the parser, parse, and complete
commands, flags, kinds and names in a real bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from client.api import KINDS
from client.cli import build_parser, main
from client.cli.completion import bash_script, walk, zsh_script
from tests.conftest import need

# A stand-in for the real command while the script completes names: it answers
# `get KIND -o name` and records what it was asked.
FAKE_PODIUM = """
podium() {
    echo "$*" >> "$ASKED"
    case "$1 $2" in
        "get pods"|"get po") printf 'pod/web-1\\npod/web-2\\npod/db-0\\n' ;;
        "get deployments") printf 'deployment.apps/web\\n' ;;
        "get nodes") printf 'node/node-1\\n' ;;
    esac
}
"""


@pytest.fixture
def script(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", "bash"]) == 0
    return capsys.readouterr().out


def complete(script: str, tmp_path: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (podium's words, the current last)."""
    need(shutil.which("bash") is not None, "needs bash")
    (tmp_path / "podium.bash").write_text(script)
    line = " ".join(f"'{w}'" for w in ("podium", *words))
    program = (f"source {tmp_path / 'podium.bash'}\n{FAKE_PODIUM}\n"
               f"COMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
               "_podium; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], text=True,
                          capture_output=True, env={"ASKED": str(tmp_path / "asked"),
                                                    "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [w for w in done.stdout.splitlines() if w]


def asked(tmp_path: Path) -> list[str]:
    path = tmp_path / "asked"
    return path.read_text().splitlines() if path.exists() else []


def test_the_bash_script_names_every_command_and_flag(script: str) -> None:
    commands = walk(build_parser())
    assert len(commands) > 20
    for command in commands:
        assert f"['{command.path}']" in script, command.path
        for flag in command.flags:
            assert flag in script
    root = commands[0]
    assert f"['podium']='{' '.join(root.shown)}'" in script
    for name in ("apply", "get", "logs", "exec", "rollout", "top", "version", "completion",
                 "image", "up", "down"):
        assert name in root.shown


def test_bash_accepts_the_script(script: str, tmp_path: Path) -> None:
    need(shutil.which("bash") is not None, "needs bash")
    path = tmp_path / "podium.bash"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_zsh_script_runs_the_same_function_through_bashcompinit() -> None:
    parser = build_parser()
    zsh = zsh_script(parser)
    assert zsh.endswith(bash_script(parser))
    assert "bashcompinit" in zsh.split("declare -gA", 1)[0]


def test_aliases_lead_to_their_command_and_values_are_known() -> None:
    by_path = {c.path: c for c in walk(build_parser())}
    top = by_path["podium top"]
    assert top.shown == ["pods", "nodes"]
    assert top.subcommands["po"] == top.subcommands["pods"] == "podium top pods"
    get = by_path["podium get"]
    assert get.values["-o"] == "choice:wide,json,yaml,name"
    assert get.values["--namespace"] == "namespace"
    assert "--watch" in get.flags and "--watch" not in get.values
    assert get.positionals == ["kind", "name*"]
    assert by_path["podium top pods"].positionals == ["name:pods*"]
    assert by_path["podium apply"].values["-f"] == "file"


def test_commands_subcommands_and_flags(script: str, tmp_path: Path) -> None:
    assert complete(script, tmp_path, "to") == ["top"]
    assert complete(script, tmp_path, "image", "pu") == ["pull", "push"]
    assert complete(script, tmp_path, "top", "") == ["pods", "nodes"]
    assert complete(script, tmp_path, "top", "pods", "--con") == ["--containers"]
    # logs' -f is --follow, apply's -f takes a file: flags are per command.
    assert "--follow" in complete(script, tmp_path, "logs", "--")
    assert "--follow" not in complete(script, tmp_path, "apply", "--")


def test_kinds_choices_and_names(script: str, tmp_path: Path) -> None:
    plurals = sorted(info.plural for info in KINDS.values())
    assert complete(script, tmp_path, "get", "") == plurals
    assert complete(script, tmp_path, "get", "dep") == ["deployments"]
    assert complete(script, tmp_path, "get", "pods", "-o", "") == ["wide", "json", "yaml",
                                                                    "name"]
    assert complete(script, tmp_path, "rollout", "") == ["status", "history", "undo"]
    assert asked(tmp_path) == []  # nothing so far needed the cluster
    assert complete(script, tmp_path, "get", "pods", "-n", "team", "--server", "h:1",
                    "web") == ["web-1", "web-2"]
    assert asked(tmp_path) == ["get pods -o name --namespace team --server h:1"]
    assert complete(script, tmp_path, "describe", "po", "d") == ["db-0"]
    assert complete(script, tmp_path, "logs", "") == ["web-1", "web-2", "db-0"]
    assert complete(script, tmp_path, "top", "nodes", "") == ["node-1"]
    assert complete(script, tmp_path, "rollout", "status", "") == ["deployment.apps/web"]


def test_files_and_a_commands_own_words_are_left_to_the_shell(script: str,
                                                               tmp_path: Path) -> None:
    # Empty: `complete -o default` then offers file names.
    assert complete(script, tmp_path, "apply", "-f", "") == []
    assert complete(script, tmp_path, "exec", "web-1", "--", "l") == []
    assert asked(tmp_path) == []
