"""A Dockerfile as a list of checked instructions, each with the line it starts on.

    parse(text, "Dockerfile") -> Dockerfile(instructions=(Instruction, ...), escape="\\")

Reading follows Docker's rules: parser directives at the very top (only
``# escape=`` matters here; ``# syntax=`` and others are ignored), comment lines
anywhere (also inside a continued instruction), a line ending in the escape
character continues on the next one, keywords in any case. Each instruction's
form is checked here, before anything runs, and every error names the line:
``Dockerfile line 7: unknown instruction 'FOO'``.

Nothing is substituted here: ``$VAR`` needs the build's environment, which only
exists while building (``runtime.images.shellwords``).
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from runtime.images.errors import ImageError
from runtime.images.shellwords import WordError, split_words


class DockerfileError(ImageError):
    """A Dockerfile that cannot be read: an unknown instruction or a malformed one."""

    def __init__(self, where: str, line: int, problem: str) -> None:
        self.where = where
        self.line = line
        self.problem = problem
        super().__init__(f"{where} line {line}: {problem}" if line else f"{where}: {problem}")


class Instruction(NamedTuple):
    line: int  # where the instruction starts (1-based)
    keyword: str  # upper case: "RUN"
    text: str  # the arguments as written, continuations joined, flags removed
    flags: tuple[tuple[str, str], ...] = ()  # ("from", "build"), ("chown", "1:1")
    words: tuple[str, ...] = ()  # unexpanded words, or the exec form's strings
    exec_form: bool = False  # a JSON array was given (RUN, CMD, ENTRYPOINT, SHELL, COPY …)
    pairs: tuple[tuple[str, str | None], ...] = ()  # ENV, LABEL, ARG: (key, value or None)

    def flag(self, name: str, default: str = "") -> str:
        for key, value in self.flags:
            if key == name:
                return value
        return default

    def __str__(self) -> str:
        flags = "".join(f"--{k}={v} " for k, v in self.flags)
        return f"{self.keyword} {flags}{self.text}".rstrip()


class Dockerfile(NamedTuple):
    instructions: tuple[Instruction, ...]
    escape: str = "\\"


_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_KEYWORD = re.compile(r"\s*([A-Za-z]+)(?:\s+(.*))?\s*$", re.DOTALL)
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Which --flags each instruction takes; a flag without '=' is a boolean "true".
_FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "RUN": frozenset({"network"}),
    "COPY": frozenset({"from", "chown", "chmod", "link"}),
    "ADD": frozenset({"chown", "chmod", "link", "checksum"}),
}
_SUPPORTED = frozenset({
    "FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE", "CMD",
    "ENTRYPOINT", "SHELL", "VOLUME", "STOPSIGNAL", "MAINTAINER",
})
# Docker knows these; podium's builder does not do them (yet), so say so rather than
# pretend they are typos.
_NOT_SUPPORTED = frozenset({"HEALTHCHECK", "ONBUILD"})


def parse(text: str, where: str = "Dockerfile") -> Dockerfile:
    lines = text.splitlines()
    escape, first = _directives(lines, where)
    instructions: list[Instruction] = []
    start = 0
    parts: list[str] = []
    for number in range(first, len(lines) + 1):
        raw = lines[number - 1]
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and parts):
            continue  # comments and blank lines, also inside a continued instruction
        if not stripped:
            continue
        if not parts:
            start = number
        body = raw.rstrip()
        if body.endswith(escape):
            parts.append(body[: -len(escape)])
            continue
        parts.append(raw)
        instructions.append(_instruction("".join(parts), start, escape, where))
        parts = []
    if parts:  # the file ends on a continuation: take what there is
        instructions.append(_instruction("".join(parts), start, escape, where))
    if not any(i.keyword == "FROM" for i in instructions):
        raise DockerfileError(where, 0, "no FROM instruction")
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword != "ARG":
            raise DockerfileError(where, ins.line, f"{ins.keyword} before the first FROM "
                                  "(only ARG may come before it)")
    return Dockerfile(tuple(instructions), escape)


def _directives(lines: list[str], where: str) -> tuple[str, int]:
    """The escape character and the first line number after the directives."""
    escape = "\\"
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        match = _DIRECTIVE.match(line)
        if match is None:
            return escape, number
        name, value = match.group(1).lower(), match.group(2)
        if name in seen:
            raise DockerfileError(where, number, f"parser directive {name!r} given twice")
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(where, number, f"escape directive: {value!r} is not "
                                      "'\\' or '`'")
            escape = value
    return escape, len(lines) + 1


def _instruction(line: str, number: int, escape: str, where: str) -> Instruction:
    match = _KEYWORD.match(line)
    if match is None:
        word = line.strip().split()[0] if line.strip() else line
        raise DockerfileError(where, number, f"unknown instruction {word!r}")
    keyword, rest = match.group(1).upper(), (match.group(2) or "").strip()
    if keyword in _NOT_SUPPORTED:
        raise DockerfileError(where, number, f"{keyword} is not supported by podium's builder")
    if keyword not in _SUPPORTED:
        raise DockerfileError(where, number, f"unknown instruction {match.group(1)!r}")
    try:
        flags, rest = _flags(keyword, rest, escape)
        return _FORMS.get(keyword, _text)(keyword, rest, flags, number, escape)
    except (WordError, _Malformed) as e:
        raise DockerfileError(where, number, f"{keyword}: {e}") from None


class _Malformed(ValueError):
    pass


def _flags(keyword: str, rest: str, escape: str) -> tuple[tuple[tuple[str, str], ...], str]:
    allowed = _FLAGS.get(keyword, frozenset())
    flags: list[tuple[str, str]] = []
    while rest.startswith("--"):
        word, *after_parts = re.split(r"\s+", rest, maxsplit=1)
        after = after_parts[0] if after_parts else ""
        name, eq, value = word[2:].partition("=")
        if name not in allowed:
            offered = ", ".join(f"--{f}" for f in sorted(allowed)) or "none"
            raise _Malformed(f"unknown flag --{name} (this instruction takes: {offered})")
        flags.append((name, value if eq else "true"))
        rest = after.lstrip()
    return tuple(flags), rest


def _need(ok: bool, problem: str) -> None:
    if not ok:
        raise _Malformed(problem)


def _json_list(rest: str) -> list[str] | None:
    """The exec form's strings, or None when ``rest`` is not a JSON array of strings."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _from(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
          escape: str) -> Instruction:
    words = split_words(rest, escape)
    _need(len(words) in (1, 3), "want FROM image [AS name]")
    if len(words) == 3:
        _need(words[1].lower() == "as", f"want FROM image AS name, not {words[1]!r}")
        _need(re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_.-]*", words[2]) is not None,
              f"stage name {words[2]!r}: letters, digits, '_', '.', '-', starting with a letter")
    return Instruction(line, keyword, rest, flags, tuple(words))


def _command(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
             escape: str) -> Instruction:
    """RUN, CMD, ENTRYPOINT: a JSON array (exec form) or a shell command line."""
    exec_words = _json_list(rest)
    if exec_words is not None:
        if keyword == "RUN":
            _need(bool(exec_words), "an empty exec form runs nothing")
        return Instruction(line, keyword, rest, flags, tuple(exec_words), exec_form=True)
    _need(bool(rest), "needs a command")
    return Instruction(line, keyword, rest, flags)


def _shell(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
           escape: str) -> Instruction:
    exec_words = _json_list(rest)
    _need(bool(exec_words), 'needs a non-empty JSON array, like SHELL ["/bin/sh", "-c"]')
    return Instruction(line, keyword, rest, flags, tuple(exec_words or ()), exec_form=True)


def _paths(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
           escape: str) -> Instruction:
    """COPY, ADD: sources then a destination, as words or as a JSON array."""
    exec_words = _json_list(rest)
    words = exec_words if exec_words is not None else split_words(rest, escape)
    _need(len(words) >= 2, f"want {keyword} source... destination")
    return Instruction(line, keyword, rest, flags, tuple(words),
                       exec_form=exec_words is not None)


def _words(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
           escape: str) -> Instruction:
    """EXPOSE, VOLUME: one or more words (VOLUME also as a JSON array)."""
    exec_words = _json_list(rest) if keyword == "VOLUME" else None
    words = exec_words if exec_words is not None else split_words(rest, escape)
    _need(bool(words), "needs at least one argument")
    return Instruction(line, keyword, rest, flags, tuple(words),
                       exec_form=exec_words is not None)


def _text(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
          escape: str) -> Instruction:
    """WORKDIR, USER, STOPSIGNAL, MAINTAINER: the rest of the line."""
    _need(bool(rest), "needs an argument")
    if keyword in ("USER", "STOPSIGNAL"):
        _need(len(split_words(rest, escape)) == 1, "takes exactly one argument")
    return Instruction(line, keyword, rest, flags, (rest,))


def _pairs(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
           escape: str) -> Instruction:
    """ENV and LABEL: ``key=value ...``, or the old ``key value`` (the rest of the line)."""
    words = split_words(rest, escape)
    _need(bool(words), "needs key=value")
    if "=" not in words[0]:
        _need(len(words) >= 2, f"{words[0]!r} has no value: want {keyword} key=value")
        value = rest[len(words[0]):].strip()
        return Instruction(line, keyword, rest, flags, pairs=((words[0], value),))
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        key, eq, value = word.partition("=")
        _need(bool(eq), f"{word!r} is not key=value (the old 'key value' form takes one pair)")
        _need(bool(key), f"{word!r} has an empty key")
        pairs.append((key, value))
    if keyword == "ENV":
        for key, _ in pairs:
            _need(bool(_ARG_NAME.match(key)) or "$" in key, f"{key!r} is not a variable name")
    return Instruction(line, keyword, rest, flags, pairs=tuple(pairs))


def _arg(keyword: str, rest: str, flags: tuple[tuple[str, str], ...], line: int,
         escape: str) -> Instruction:
    words = split_words(rest, escape)
    _need(bool(words), "needs a name: ARG name[=default]")
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        name, eq, default = word.partition("=")
        _need(_ARG_NAME.match(name) is not None, f"{name!r} is not a variable name")
        pairs.append((name, default if eq else None))
    return Instruction(line, keyword, rest, flags, pairs=tuple(pairs))


_FORMS = {
    "FROM": _from, "RUN": _command, "CMD": _command, "ENTRYPOINT": _command, "SHELL": _shell,
    "COPY": _paths, "ADD": _paths, "EXPOSE": _words, "VOLUME": _words, "ENV": _pairs,
    "LABEL": _pairs, "ARG": _arg,
}
