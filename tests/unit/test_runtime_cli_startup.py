"""What keeps ``podium-runtime`` quick to start: every command pays for the modules it
imports and the work they do on import, so these pin the choices that made it cheaper."""

from __future__ import annotations

import gc
import shutil

import pytest

from runtime.cgroups.base import CgroupStats
from runtime.cli import _terminal_columns, main
from runtime.spec import model
from runtime.state import State
from tests.support.imports import modules_after

# What `run` reaches before it creates the container: the parser, the commands and
# the cgroup warmer (whose modules import the rest of the runtime).
_RUN_PATH = """
from runtime.cli import _command_of, _parser
argv = ["run", "--bundle", "b", "x"]
_parser(_command_of(argv)).parse_args(argv)
import runtime.cli.commands, runtime.cli.warm
"""


def test_the_run_path_leaves_out_modules_it_does_not_need() -> None:
    # shutil (with zlib, bz2, lzma) is what argparse imports to size its help text;
    # threading is what the warmer would otherwise start its thread with.
    unwanted = {"shutil", "bz2", "lzma", "threading"} & modules_after(_RUN_PATH)
    assert not unwanted, f"imported on every podium-runtime run: {sorted(unwanted)}"


def _records() -> list[type]:
    named = [getattr(model, n) for n in dir(model)]
    return [c for c in named if isinstance(c, type) and hasattr(c, "_fields")]


@pytest.mark.parametrize("record", [*_records(), State, CgroupStats],
                         ids=lambda c: c.__name__)
def test_records_have_no_string_annotations(record: type) -> None:
    # A string annotation (``from __future__ import annotations``) makes
    # typing.NamedTuple compile it on import: ~2.5 ms of every command for model.py.
    strings = {k: v for k, v in record.__annotations__.items() if isinstance(v, str)}
    assert not strings, f"{record.__name__}: {strings}"


@pytest.mark.parametrize("columns", ["50", "wide", None])
def test_the_help_is_as_wide_as_shutil_would_make_it(
        monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _terminal_columns() == shutil.get_terminal_size().columns


def test_main_leaves_the_collector_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert gc.isenabled()
    with pytest.raises(SystemExit):
        main(["--no-such-option"])
    assert gc.isenabled()
    capsys.readouterr()
