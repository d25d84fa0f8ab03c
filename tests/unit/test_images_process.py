"""Kubernetes' rules for command/args over the image's Entrypoint/Cmd."""

from __future__ import annotations

import pytest

from runtime.images import ProcessArgsError, resolve_process_args

EP = ["/entry", "-x"]
CMD = ["serve", "--port=80"]


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (None, None, EP + CMD),
        ([], [], EP + CMD),  # empty counts as not set
        (["/bin/sh", "-c", "true"], None, ["/bin/sh", "-c", "true"]),
        (None, ["--debug"], EP + ["--debug"]),
        (["/app"], ["a", "b"], ["/app", "a", "b"]),
    ],
)
def test_kubernetes_table(
    command: list[str] | None, args: list[str] | None, expected: list[str]
) -> None:
    assert resolve_process_args(EP, CMD, command, args) == expected


def test_image_without_entrypoint_runs_cmd_or_args() -> None:
    assert resolve_process_args(None, ["sh"]) == ["sh"]
    assert resolve_process_args(None, ["sh"], args=["echo", "hi"]) == ["echo", "hi"]


def test_image_without_cmd_runs_entrypoint() -> None:
    assert resolve_process_args(["/entry"], None) == ["/entry"]


def test_nothing_to_run_is_an_error() -> None:
    with pytest.raises(ProcessArgsError, match="no command"):
        resolve_process_args(None, None)
    with pytest.raises(ProcessArgsError):
        resolve_process_args([], [], [], [])


def test_inputs_are_not_modified() -> None:
    ep, cmd = list(EP), list(CMD)
    resolve_process_args(ep, cmd, None, ["x"]).append("y")
    assert (ep, cmd) == (EP, CMD)
