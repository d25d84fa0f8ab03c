"""Words of a Dockerfile line: splitting on blanks, quotes, escapes and ``$VAR`` substitution.

Docker's rules, as its builder applies them to the instructions that take variables
(FROM, COPY, ADD, ENV, ARG, LABEL, EXPOSE, USER, WORKDIR, VOLUME, STOPSIGNAL):

- ``$NAME`` and ``${NAME}``; ``${NAME:-word}`` (word if unset or empty),
  ``${NAME-word}`` (word if unset), ``${NAME:+word}`` / ``${NAME+word}`` (word if set
  [and not empty], else nothing), ``${NAME:?msg}`` / ``${NAME?msg}`` (an error).
- Single quotes keep everything literal; double quotes keep blanks but still
  substitute; the escape character (``\\`` or the ``# escape=`` directive's) makes the
  next character literal (inside double quotes only before ``"``, ``$`` and itself).
- An unset variable expands to nothing.

RUN, CMD and ENTRYPOINT are not substituted here: their shell does it, in the container.
"""

from __future__ import annotations

from collections.abc import Mapping

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class WordError(ValueError):
    """A word that cannot be processed; the message says why (the caller adds where)."""


def split_words(text: str, escape: str = "\\") -> list[str]:
    """Split on blanks outside quotes; quotes and escapes stay for ``expand`` to process."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote = ""
    braces = 0  # inside ${...}, where "${A:-a b}" is one word
    i = 0
    while i < len(text):
        ch = text[i]
        if not quote and not braces and ch in " \t\r\n":
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            i += 1
            continue
        in_word = True
        current.append(ch)
        if ch == escape and quote != "'" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in "'\"":
            quote = ch
        elif quote != "'" and ch == "$" and text[i + 1:i + 2] == "{":
            braces += 1
            current.append("{")
            i += 1
        elif braces and quote != "'" and ch == "}":
            braces -= 1
        i += 1
    if quote:
        raise WordError(f"unmatched {quote} quote")
    if in_word:
        words.append("".join(current))
    return words


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """``word`` with quotes removed, escapes applied and variables substituted."""
    return _Expander(word, env, escape).run()


def expand_all(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    return [expand(w, env, escape) for w in split_words(text, escape)]


class _Expander:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def run(self, stop: str = "") -> str:
        """Process up to the end, or up to an unquoted ``stop`` character (not consumed)."""
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch == stop:
                break
            self.pos += 1
            if ch == self.escape:
                if self.pos < len(self.text):
                    out.append(self.next())
                else:
                    out.append(ch)  # a lone escape at the end stays as it is
            elif ch == "'":
                out.append(self._single_quoted())
            elif ch == '"':
                out.append(self._double_quoted())
            elif ch == "$":
                out.append(self._variable())
            else:
                out.append(ch)
        return "".join(out)

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise WordError("unmatched ' quote")
        value = self.text[self.pos:end]
        self.pos = end + 1
        return value

    def _double_quoted(self) -> str:
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise WordError('unmatched " quote')
            ch = self.next()
            if ch == '"':
                return "".join(out)
            if ch == self.escape and self.peek() in ('"', "$", self.escape) and self.peek():
                out.append(self.next())
            elif ch == "$":
                out.append(self._variable())
            else:
                out.append(ch)

    def _name(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _NAME_CHARS:
            self.pos += 1
        return self.text[start:self.pos]

    def _variable(self) -> str:
        if self.peek() == "{":
            self.pos += 1
            return self._braced()
        name = self._name()
        if not name:
            return "$"  # a '$' not followed by a name is literal, as in the shell
        return self.env.get(name, "")

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise WordError("bad substitution: ${ must be followed by a variable name")
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            ch = self.next()
        if ch not in ("-", "+", "?"):
            raise WordError(f"bad substitution in ${{{name}...}}: unsupported modifier {ch!r}")
        word = self.run(stop="}")
        if self.next() != "}":
            raise WordError(f"bad substitution: missing }} after ${{{name}")
        value = self.env.get(name)
        is_set = value is not None and (not colon or value != "")
        if ch == "-":
            return value if is_set and value is not None else word
        if ch == "+":
            return word if is_set else ""
        if not is_set:
            raise WordError(f"{name}: {word or 'is not set'}")
        return value or ""
