"""``.dockerignore``: which files of the build context COPY and ADD leave out.

Docker's rules: one pattern a line, ``#`` starts a comment line, blank lines are
skipped; a pattern is relative to the context root (a leading ``/`` is dropped)
and cleaned like a path. ``*`` matches within one path component, ``?`` one
character, ``[a-z]`` a class, ``**`` any number of components (none too), ``\\``
makes the next character literal. A path is excluded when the last pattern that
matches it, or one of its parent directories, is not a ``!`` exception.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import NamedTuple


class Pattern(NamedTuple):
    text: str
    regex: re.Pattern[str]
    exception: bool  # "!pattern": include again what an earlier pattern excluded


class IgnoreRules:
    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [p for p in (_compile(text) for text in patterns) if p is not None]
        self.has_exceptions = any(p.exception for p in self.patterns)

    @classmethod
    def read(cls, context: Path) -> IgnoreRules:
        """The rules of ``context/.dockerignore`` (none if there is no such file)."""
        try:
            text = (context / ".dockerignore").read_text()
        except FileNotFoundError:
            return cls([])
        return cls(text.splitlines())

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, '/'-separated) is left out."""
        path = path.strip("/")
        if not path or path == ".":
            return False
        candidates = [path]
        parent = posixpath.dirname(path)
        while parent:
            candidates.append(parent)
            parent = posixpath.dirname(parent)
        excluded = False
        for pattern in self.patterns:
            if any(pattern.regex.match(c) for c in candidates):
                excluded = not pattern.exception
        return excluded

    def may_include_below(self, directory: str) -> bool:
        """Whether anything below an excluded ``directory`` could be included again."""
        return self.has_exceptions


def _compile(line: str) -> Pattern | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    exception = text.startswith("!")
    if exception:
        text = text[1:].strip()
    text = posixpath.normpath(text) if text else text
    if len(text) > 1 and text.startswith("/"):
        text = text.lstrip("/")
    if not text or text == ".":
        return None
    return Pattern(text, re.compile(_regex(text)), exception)


def _regex(pattern: str) -> str:
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                    out.append("(.*/)?")  # "**/" also matches no directory at all
                else:
                    out.append(".*")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)
