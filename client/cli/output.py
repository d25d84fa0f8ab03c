"""What commands print: aligned tables, sizes and ages as people read them, JSON."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None,
          gap: int = 3, paint: Mapping[str, Callable[[str], str]] | None = None) -> None:
    """Columns left-aligned to their widest cell, as ``docker images`` prints them.

    ``paint`` maps a column's header to what colours its cells (``STATUS``); the
    padding is measured on the plain text, so colour codes never shift a column."""
    out = out or sys.stdout
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    painters = [(paint or {}).get(h) for h in headers]
    for n, cells in enumerate((headers, *rows)):
        parts = []
        for cell, width, painter in zip(cells, widths, painters, strict=True):
            shown = painter(cell) if painter is not None and n else cell
            parts.append(shown + " " * (width - len(cell)))
        out.write((" " * gap).join(parts).rstrip() + "\n")


def print_json(doc: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(doc, indent=2) + "\n")


def human_size(n: int) -> str:
    """Decimal units as Docker shows them: ``4.26MB``, ``512kB``, ``0B``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n}B" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time from an image config (nanoseconds allowed); None if it is not one."""
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00"), 1))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def age(text: str, now: datetime | None = None) -> str:
    """``3 minutes ago``, ``2 weeks ago``; ``N/A`` for a missing or unreadable time."""
    when = parse_time(text) if text else None
    if when is None:
        return "N/A"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        return "in the future"
    if seconds < 1:
        return "Less than a second ago"
    for unit, length in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400),
                         ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    raise AssertionError("unreachable")
