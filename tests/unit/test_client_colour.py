"""Colour and progress only for a terminal: STATUS cells coloured when stdout is a
TTY (unless NO_COLOR or --no-color), progress on stderr only when stderr is one;
piped output stays plain. A terminal is faked with a stream whose isatty is True."""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.api import Client
from client.cli import main
from client.cli.output import table
from client.cli.style import (
    GREEN,
    RED,
    YELLOW,
    StatusLine,
    colour_enabled,
    status_colour,
    status_painter,
)
from tests.support.cluster import HollowNode, running_scheduler
from tests.support.cluster import client as raw_client

ANSI = re.compile(r"\033\[[0-9;]*[A-Za-z]")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = argparse.Namespace(no_color=False)
    assert colour_enabled(plain, Tty())
    assert not colour_enabled(plain, io.StringIO())
    assert not colour_enabled(argparse.Namespace(no_color=True), Tty())
    monkeypatch.setenv("NO_COLOR", "")  # set but empty: no-color.org says it does not count
    assert colour_enabled(plain, Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_enabled(plain, Tty())
    assert status_painter(plain, Tty()) is None


@pytest.mark.parametrize("status, colour", [
    ("Running", GREEN), ("Ready", GREEN), ("Completed", GREEN),
    ("Pending", YELLOW), ("ContainerCreating", YELLOW), ("Init:0/2", YELLOW),
    ("CrashLoopBackOff", RED), ("ErrImagePull", RED), ("Error", RED), ("NotReady", RED),
    ("Init:Error", RED), ("Ready,SchedulingDisabled", GREEN), ("<none>", None), ("", None),
])
def test_status_colours(status: str, colour: str | None) -> None:
    assert status_colour(status) == colour


def test_coloured_cells_keep_the_columns_aligned() -> None:
    rows = [["web-1", "Running", "0"], ["web-22", "CrashLoopBackOff", "12"]]
    plain, coloured = io.StringIO(), io.StringIO()
    table(["NAME", "STATUS", "RESTARTS"], rows, plain)
    painter = status_painter(argparse.Namespace(no_color=False), Tty())
    assert painter is not None
    table(["NAME", "STATUS", "RESTARTS"], rows, coloured, paint={"STATUS": painter})
    assert coloured.getvalue() != plain.getvalue()
    assert ANSI.sub("", coloured.getvalue()) == plain.getvalue()
    assert "\033[32mRunning\033[0m" in coloured.getvalue()
    assert "STATUS" in coloured.getvalue().splitlines()[0]  # the header stays plain
    assert "\033" not in coloured.getvalue().splitlines()[0]


def test_status_line_only_on_a_terminal() -> None:
    tty, pipe = Tty(), io.StringIO()
    for out in (tty, pipe):
        line = StatusLine(out)
        line.show("waiting 1")
        line.show("waiting 2")
        line.clear()
        line.clear()
    assert tty.getvalue() == "\r\033[Kwaiting 1\r\033[Kwaiting 2\r\033[K"
    assert pipe.getvalue() == ""


# --- the commands ------------------------------------------------------------------

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: httpd, image: busybox:latest}]
"""
HUGE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: huge}
spec:
  replicas: 1
  selector: {matchLabels: {app: huge}}
  template:
    metadata: {labels: {app: huge}}
    spec:
      containers:
      - name: main
        image: busybox:latest
        resources: {requests: {cpu: "64"}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with running_scheduler() as scheduler, raw_client(scheduler.port) as stub:
        node = HollowNode(stub, "node-1", cpu="2")
        try:
            address = f"127.0.0.1:{scheduler.port}"
            (tmp_path / "pod.yaml").write_text(POD)
            assert main(["apply", "-f", str(tmp_path / "pod.yaml"), "--server", address]) == 0
            with Client(address) as c:
                deadline = time.monotonic() + 20
                while c.get("Pod", "web").status.phase != "Running":
                    assert time.monotonic() < deadline, "the pod never ran"
                    time.sleep(0.05)
            yield address
        finally:
            node.close()


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
        stdout_tty: bool = False, stderr_tty: bool = False) -> tuple[int, str, str]:
    """``podium argv`` with stdout and stderr each a terminal or a pipe."""
    out: io.StringIO = Tty() if stdout_tty else io.StringIO()
    err: io.StringIO = Tty() if stderr_tty else io.StringIO()
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_get_colours_status_on_a_terminal_only(server: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "get", "pods", "--server", server, stdout_tty=True)
    assert code == 0 and "\033[32mRunning\033[0m" in out
    code, piped, _ = run(monkeypatch, capsys, "get", "pods", "--server", server)
    assert code == 0 and "\033" not in piped and "Running" in piped
    assert ANSI.sub("", out) == piped
    code, out, _ = run(monkeypatch, capsys, "get", "nodes", "--no-color", "--server", server,
                       stdout_tty=True)
    assert code == 0 and "\033" not in out and "Ready" in out
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, _ = run(monkeypatch, capsys, "get", "pods", "--server", server, stdout_tty=True)
    assert code == 0 and "\033" not in out
    # -o json is for programs: never coloured.
    monkeypatch.delenv("NO_COLOR")
    code, out, _ = run(monkeypatch, capsys, "get", "pods", "-o", "json", "--server", server,
                       stdout_tty=True)
    assert code == 0 and "\033" not in out


def test_rollout_progress_on_a_terminal_only(server: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "huge.yaml").write_text(HUGE)  # asks 64 CPUs of a 2-CPU node: never ready
    assert main(["apply", "-f", str(tmp_path / "huge.yaml"), "--server", server]) == 0
    argv = ("rollout", "status", "deployment/huge", "--timeout", "1", "--server", server)
    code, out, err = run(monkeypatch, capsys, *argv)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith(
        'podium: deployment "huge" did not finish rolling out within 1s: Waiting for')
    code, out, err = run(monkeypatch, capsys, *argv, stderr_tty=True)
    assert (code, out) == (1, "")
    assert err.startswith('\r\033[KWaiting for deployment "huge" rollout to finish')
    assert "\r\033[Kpodium: deployment" in err  # the progress line is cleared first
    # --watch=false answers at once, on stdout: it is the result, not progress.
    code, out, err = run(monkeypatch, capsys, "rollout", "status", "deployment/huge",
                         "--watch", "false", "--server", server, stderr_tty=True)
    assert code == 1 and out.startswith('Waiting for deployment "huge"') and err == ""
