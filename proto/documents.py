"""Manifest files as documents: YAML (several documents) or JSON, each object
with the line of every field in it, so that an error can say where it is.

    docs = load_documents(text, "app.yaml")   # ManifestError on bad YAML or JSON
    docs[0].body, docs[0].lines[("spec", "containers", 0)]

``proto.kube`` turns each document into an object; the error helpers here
(``error``, ``located``, ``json_type``) word its messages the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import yaml

Path = tuple[str | int, ...]

__all__ = ["Document", "ManifestError", "Path", "error", "json_type", "load_documents",
           "located"]


class ManifestError(ValueError):
    """A manifest that cannot become an object; the message says where, on one line."""


class Document(NamedTuple):
    """One object's manifest as read from a file, with what locates it there."""

    filename: str
    number: int  # 1-based, counting every document of the file
    body: dict[str, Any]
    # Every path in the document (from the document's root) -> its 1-based line.
    lines: Mapping[Path, int]
    # Where ``body`` sits in the document: () or ("items", 3) for a List item.
    prefix: Path = ()


# --- reading files -----------------------------------------------------------

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader that leaves timestamps as the strings protobuf's JSON parser reads."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Lines(Mapping[Path, int]):
    """A document's line map, made on first use: only an error or a warning reads
    it, and most documents have neither."""

    def __init__(self, make: Callable[[], dict[Path, int]]) -> None:
        self._make: Callable[[], dict[Path, int]] | None = make
        self._lines: dict[Path, int] = {}

    def _made(self) -> dict[Path, int]:
        make = self._make
        if make is not None:  # two threads may both make it: the same map
            self._lines, self._make = make(), None
        return self._lines

    def __getitem__(self, path: Path) -> int:
        return self._made()[path]

    def __contains__(self, path: object) -> bool:
        return path in self._made()

    def __iter__(self) -> Iterator[Path]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._made())


def _node_lines(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                child = (*path, key.value)
                _node_lines(value, child, lines)
                lines[child] = key.start_mark.line + 1  # the key's line, not the value's
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, (*path, index), lines)


def _lines_of(node: yaml.Node | None) -> Mapping[Path, int]:
    def make() -> dict[Path, int]:
        lines: dict[Path, int] = {}
        if node is not None:
            _node_lines(node, (), lines)
        return lines

    return _Lines(make)


def _yaml_documents(text: str, filename: str) -> Iterator[tuple[Any, Mapping[Path, int]]]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield loader.construct_document(node), _lines_of(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or "not valid YAML"
        raise ManifestError(f"{filename}{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{filename}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


_LOOKS_LIKE_JSON = re.compile(r'\s*(\[|\{\s*["}])')


def _json_documents(text: str, filename: str) -> list[tuple[Any, Mapping[Path, int]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"{filename}, line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None

    def lines() -> dict[Path, int]:
        # JSON is YAML, so YAML's node marks give the lines: a second parse of the
        # whole text, so only when a line is asked for.
        try:
            return dict(next(iter(_yaml_documents(text, filename)))[1])
        except (ManifestError, StopIteration):  # JSON that YAML 1.1 reads otherwise
            return {}

    return [(data, _Lines(lines))]


def load_documents(text: str, filename: str = "<stdin>") -> list[Document]:
    """The objects of a YAML (several documents) or JSON file, List kinds expanded.

    Empty documents are skipped but counted, so document numbers match the
    file. Raises ManifestError for a syntax error (with line and column) or a
    document that is not a mapping.
    """
    # JSON object keys are quoted; flow-style YAML ({apiVersion: v1}) also
    # starts with a brace but goes to the YAML reader.
    if _LOOKS_LIKE_JSON.match(text):
        raw = _json_documents(text, filename)
    else:
        raw = list(_yaml_documents(text, filename))
    documents: list[Document] = []
    for number, (data, lines) in enumerate(raw, start=1):
        if data is None:
            continue
        where = f"{filename}, document {number}"
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a mapping, found {json_type(data)}")
        documents.extend(_expand_list(Document(filename, number, data, lines)))
    return documents


def _expand_list(doc: Document) -> list[Document]:
    kind = doc.body.get("kind")
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in doc.body):
        return [doc]
    items = doc.body["items"] or []
    if not isinstance(items, list):
        raise error(doc, ("items",), f"expected a list, found {json_type(items)}")
    # A typed list (PodList) may leave apiVersion and kind out of its items.
    item_kind = kind[: -len("List")] or None
    expanded = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise error(doc, ("items", index), f"expected a mapping, found {json_type(item)}")
        if item_kind is not None:
            item = {"apiVersion": doc.body.get("apiVersion"), "kind": item_kind, **item}
        expanded.append(doc._replace(body=item, prefix=("items", index)))
    return expanded


# --- where a field is, in words -------------------------------------------------


def _format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _line_of(doc: Document, path: Path) -> int | None:
    full = doc.prefix + path
    while True:
        if full in doc.lines:
            return doc.lines[full]
        if not full:
            return None
        full = full[:-1]


def located(doc: Document, path: Path, what: str, line_of: Path | None = None) -> str:
    where = f"{doc.filename}, document {doc.number}: "
    field = _format_path(doc.prefix + path)
    at = path if line_of is None else line_of
    line = _line_of(doc, at) if at or doc.prefix else None
    suffix = f" (line {line})" if line is not None else ""
    return f"{where}{field + ': ' if field else ''}{what}{suffix}"


def error(doc: Document, path: Path, what: str, line_of: Path | None = None) -> ManifestError:
    return ManifestError(located(doc, path, what, line_of))


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
