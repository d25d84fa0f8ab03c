"""Colour and progress, only for a person at a terminal.

Piped output must stay plain and parseable, so a STATUS cell is coloured only
when stdout is a terminal, ``NO_COLOR`` is unset (or empty, as no-color.org
says) and ``--no-color`` was not given; progress goes to stderr, and only when
stderr is a terminal, so ``podium … | grep`` and ``2>log`` see none of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO

GREEN, YELLOW, RED = "32", "33", "31"
# A status word's colour; any word not named here is a failure (red), since the
# list of ways a container can fail (CrashLoopBackOff, ErrImagePull …) is open.
_COLOURS = {
    **dict.fromkeys(("Running", "Ready", "Active", "Succeeded", "Completed"), GREEN),
    **dict.fromkeys(("Pending", "ContainerCreating", "PodInitializing", "Terminating",
                     "Waiting", "Unknown"), YELLOW),
}
_CLEAR_LINE = "\r\033[K"


def colour_enabled(args: argparse.Namespace | None = None, out: TextIO | None = None) -> bool:
    """Whether to colour what goes to ``out`` (default stdout)."""
    if args is not None and getattr(args, "no_color", False):
        return False
    if os.environ.get("NO_COLOR"):
        return False
    stream = out if out is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def status_colour(status: str) -> str | None:
    """The colour of a STATUS cell: ``Running`` green, ``Pending`` yellow,
    ``CrashLoopBackOff`` red; a node's ``Ready,SchedulingDisabled`` by its first word;
    an init container's ``Init:0/1`` yellow; ``Init:Error`` red. None: leave it plain."""
    if not status or status.startswith("<"):
        return None
    first = status.split(",", 1)[0]
    if first.startswith("Init:"):
        rest = first.removeprefix("Init:")
        return YELLOW if rest[:1].isdigit() else RED
    return _COLOURS.get(first, RED)


def paint(text: str, colour: str | None) -> str:
    return f"\033[{colour}m{text}\033[0m" if colour else text


def status_painter(args: argparse.Namespace | None = None,
                   out: TextIO | None = None) -> Callable[[str], str] | None:
    """A function that colours a STATUS cell, or None when colour is off."""
    if not colour_enabled(args, out):
        return None
    return lambda cell: paint(cell, status_colour(cell))


class StatusLine:
    """One line of progress on stderr, redrawn in place; silent off a terminal.

    ``show`` replaces the line, ``clear`` removes it before the result is printed."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stderr
        isatty = getattr(self.out, "isatty", None)
        self.enabled = bool(isatty is not None and isatty())
        self._shown = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        self.out.write(_CLEAR_LINE + text)
        self.out.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.out.write(_CLEAR_LINE)
            self.out.flush()
            self._shown = False
