"""Label and field selectors, as Kubernetes writes them.

Label selectors select by labels: ``app=web,tier!=db,env in (a,b),!canary``.
Requirements are joined by "," (all must hold); whitespace between tokens is
ignored. ``a=b`` and ``a==b`` need label a with value b; ``a!=b`` holds when a
is absent or has another value; ``a in (x,y)`` needs a with one of the
values; ``a notin (x)`` holds when a is absent or has none of them; ``a``
needs the label, ``!a`` its absence. An empty selector matches everything.

    matcher = parse_label_selector("app=web,env in (prod,staging)")
    matcher.matches({"app": "web", "env": "prod"})      # True
    matcher_from(deployment.spec.selector)               # from a LabelSelector

Field selectors compare a few fields per kind for (in)equality:
``spec.nodeName=node-1,status.phase!=Running``; a ``\\`` escapes ``,``, ``=``
and ``\\`` (and may escape ``!``) in a value.

    fields = parse_field_selector("spec.nodeName=node-1", "Pod")
    fields.matches(obj)                                   # obj: cluster_pb2.Object

Both matchers are built once and then asked about every change a watch sees,
so parsing does all the work and `matches` is a loop over a few tuples.
Errors are `SelectorError` (a ValueError) naming the position or the field.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from proto.podium.v1 import cluster_pb2, meta_pb2
from scheduler.api.names import why_not_label_value, why_not_qualified_name
from scheduler.objects import KINDS, check_kind


class SelectorError(ValueError):
    """A selector that does not parse, or names a field that cannot be selected on."""


class Operator(enum.StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


class Requirement(NamedTuple):
    key: str
    operator: Operator
    # Sorted; one value for EQUALS and NOT_EQUALS, none for EXISTS and DOES_NOT_EXIST.
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op is Operator.EQUALS:
            return labels.get(self.key) == self.values[0]
        if op is Operator.NOT_EQUALS:
            return labels.get(self.key) != self.values[0]
        if op is Operator.IN:
            value = labels.get(self.key)
            return value is not None and value in self.values
        if op is Operator.NOT_IN:
            return labels.get(self.key) not in self.values
        if op is Operator.EXISTS:
            return self.key in labels
        return self.key not in labels

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if op in (Operator.EQUALS, Operator.NOT_EQUALS):
            return f"{self.key}{op.value}{self.values[0]}"
        # ("",) prints as "(,)": "()" would read back as no values at all.
        values = ",".join(self.values) if self.values != ("",) else ","
        return f"{self.key} {op.value} ({values})"


class LabelMatcher:
    """Requirements that must all hold; built by the functions below."""

    __slots__ = ("requirements", "_nothing")

    def __init__(self, requirements: Iterable[Requirement] = (), *, nothing: bool = False):
        # Sorted so that equal selectors compare and print alike.
        self.requirements: tuple[Requirement, ...] = tuple(sorted(requirements))
        self._nothing = nothing

    @property
    def empty(self) -> bool:
        """Matches every set of labels."""
        return not self.requirements and not self._nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self._nothing:
            return False
        for requirement in self.requirements:
            if not requirement.matches(labels):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        if self._nothing:
            return "LabelMatcher(nothing)"
        return f"LabelMatcher({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelMatcher):
            return NotImplemented
        return (self.requirements, self._nothing) == (other.requirements, other._nothing)

    def __hash__(self) -> int:
        return hash((self.requirements, self._nothing))


EVERYTHING = LabelMatcher()
NOTHING = LabelMatcher(nothing=True)


def _requirement(key: str, op: Operator, values: Iterable[str]) -> Requirement:
    """A checked requirement; SelectorError names what is wrong."""
    why = why_not_qualified_name(key)
    if why is not None:
        raise SelectorError(f"label key: {why}")
    ordered = tuple(sorted(set(values)))
    for value in ordered:
        why = why_not_label_value(value)
        if why is not None:
            raise SelectorError(f"label {key}: {why}")
    if op in (Operator.IN, Operator.NOT_IN) and not ordered:
        raise SelectorError(f"label {key}: {op.value} needs at least one value")
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and ordered:
        raise SelectorError(f"label {key}: {op.name.lower()} takes no values")
    return Requirement(key, op, ordered)


# --- label selector strings ----------------------------------------------------------

_SPECIAL = frozenset("!=,()")


def _tokens(text: str) -> list[tuple[str, int]]:
    """(token, position) pairs; a token is one of ! = == != , ( ) or a word."""
    out: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "=!" and text.startswith("=", i + 1):
            out.append((c + "=", i))
            i += 2
        elif c in _SPECIAL:
            out.append((c, i))
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            out.append((text[start:i], start))
    return out


def _is_word(token: str) -> bool:
    return token not in ("!", "=", "==", "!=", ",", "(", ")")


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def fail(self, what: str) -> SelectorError:
        if self.i < len(self.tokens):
            token, pos = self.tokens[self.i]
            found = f'"{token}" at position {pos}'
        else:
            found = f"the end at position {len(self.text)}"
        return SelectorError(f'label selector "{self.text}": expected {what}, found {found}')

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.i][0]
        self.i += 1
        return token

    def word(self, what: str) -> str:
        token = self.peek()
        if token is None or not _is_word(token):
            raise self.fail(what)
        return self.take()

    def checked(self, pos: int, key: str, op: Operator, values: Iterable[str]) -> Requirement:
        try:
            return _requirement(key, op, values)
        except SelectorError as e:
            raise SelectorError(f'label selector "{self.text}" at position {pos}: {e}') from None

    def requirement(self) -> Requirement:
        pos = self.tokens[self.i][1] if self.i < len(self.tokens) else len(self.text)
        if self.peek() == "!":
            self.take()
            key = self.word("a label key after !")
            return self.checked(pos, key, Operator.DOES_NOT_EXIST, ())
        key = self.word("a label key")
        token = self.peek()
        if token is None or token == ",":
            return self.checked(pos, key, Operator.EXISTS, ())
        if token in ("=", "==", "!="):
            self.take()
            op = Operator.NOT_EQUALS if token == "!=" else Operator.EQUALS
            nxt = self.peek()
            value = "" if nxt is None or nxt == "," else self.word("a label value")
            return self.checked(pos, key, op, (value,))
        if token in ("in", "notin"):
            self.take()
            op = Operator.IN if token == "in" else Operator.NOT_IN
            return self.checked(pos, key, op, self.values())
        raise self.fail('"=", "==", "!=", "in", "notin", "," or the end')

    def values(self) -> list[str]:
        if self.peek() != "(":
            raise self.fail('"("')
        self.take()
        values: list[str] = []
        if self.peek() == ")":
            self.take()
            return values  # refused by _requirement: in and notin need a value
        while True:
            token = self.peek()
            # "(a,,b)" and "(a,)" hold the empty value, as in Kubernetes.
            if token is not None and _is_word(token):
                values.append(self.take())
                token = self.peek()
            else:
                values.append("")
            if token == ")":
                self.take()
                break
            if token != ",":
                raise self.fail('"," or ")"')
            self.take()
        return values

    def parse(self) -> LabelMatcher:
        requirements: list[Requirement] = []
        if not self.tokens:
            return EVERYTHING
        while True:
            requirements.append(self.requirement())
            if self.peek() is None:
                return LabelMatcher(requirements)
            if self.peek() != ",":
                raise self.fail('"," or the end')
            self.take()


def parse_label_selector(text: str) -> LabelMatcher:
    """The matcher for a selector string; "" (or only spaces) matches everything."""
    return _LabelParser(text).parse()


_OPERATORS = {"In": Operator.IN, "NotIn": Operator.NOT_IN, "Exists": Operator.EXISTS,
              "DoesNotExist": Operator.DOES_NOT_EXIST}


def matcher_from(selector: meta_pb2.LabelSelector | None) -> LabelMatcher:
    """The matcher for a LabelSelector message: matchLabels and matchExpressions.

    An empty selector matches everything; None (Kubernetes' nil selector)
    matches nothing. A proto3 message field is never None, so a caller for
    whom an unset selector means "nothing" passes
    ``spec.selector if spec.HasField("selector") else None``.
    """
    if selector is None:
        return NOTHING
    requirements = [_requirement(key, Operator.EQUALS, (value,))
                    for key, value in selector.match_labels.items()]
    for i, expression in enumerate(selector.match_expressions):
        op = _OPERATORS.get(expression.operator)
        if op is None:
            raise SelectorError(
                f'matchExpressions[{i}].operator: "{expression.operator}" is not one of '
                "In, NotIn, Exists, DoesNotExist")
        try:
            requirements.append(_requirement(expression.key, op, expression.values))
        except SelectorError as e:
            raise SelectorError(f"matchExpressions[{i}]: {e}") from None
    return LabelMatcher(requirements)


def matcher_from_labels(labels: Mapping[str, str]) -> LabelMatcher:
    """Equality on every label of a map (a Service's or a nodeSelector's).

    An empty map matches everything; a Service with no selector keeps no
    Endpoints, which its caller decides, not this matcher.
    """
    return LabelMatcher(_requirement(k, Operator.EQUALS, (v,)) for k, v in labels.items())


# --- field selectors -----------------------------------------------------------------

Getter = Callable[[cluster_pb2.Object], str]


def _bool(value: bool) -> str:
    return "true" if value else "false"


# Kind -> field path -> how to read it as the string a selector compares with.
FIELDS: dict[str, dict[str, Getter]] = {
    "Pod": {
        "spec.nodeName": lambda o: o.pod.spec.node_name,
        "spec.restartPolicy": lambda o: o.pod.spec.restart_policy,
        "spec.hostNetwork": lambda o: _bool(o.pod.spec.host_network),
        "status.phase": lambda o: o.pod.status.phase,
        "status.podIP": lambda o: o.pod.status.pod_ip,
        "status.hostIP": lambda o: o.pod.status.host_ip,
    },
    "Node": {"spec.unschedulable": lambda o: _bool(o.node.spec.unschedulable)},
    "Namespace": {"status.phase": lambda o: o.namespace.status.phase},
    "Event": {
        "involvedObject.kind": lambda o: o.event.involved_object.kind,
        "involvedObject.name": lambda o: o.event.involved_object.name,
        "involvedObject.namespace": lambda o: o.event.involved_object.namespace,
        "involvedObject.uid": lambda o: o.event.involved_object.uid,
        "involvedObject.apiVersion": lambda o: o.event.involved_object.api_version,
        "involvedObject.resourceVersion": lambda o: o.event.involved_object.resource_version,
        "involvedObject.fieldPath": lambda o: o.event.involved_object.field_path,
        "reason": lambda o: o.event.reason,
        "type": lambda o: o.event.type,
        "source": lambda o: o.event.source.component,
    },
    "Service": {
        "spec.clusterIP": lambda o: o.service.spec.cluster_ip,
        "spec.type": lambda o: o.service.spec.type,
    },
    "Endpoints": {},
    "Deployment": {},
    "ReplicaSet": {},
}


def _getters(kind: str) -> dict[str, Getter]:
    """Every selectable field of `kind`: metadata.name and .namespace, then its own."""
    field = KINDS[check_kind(kind)]

    def name(obj: cluster_pb2.Object) -> str:
        return getattr(obj, field).metadata.name  # type: ignore[no-any-return]

    def namespace(obj: cluster_pb2.Object) -> str:
        return getattr(obj, field).metadata.namespace  # type: ignore[no-any-return]

    return {"metadata.name": name, "metadata.namespace": namespace, **FIELDS[kind]}


_GETTERS = {kind: _getters(kind) for kind in KINDS}


def selectable_fields(kind: str) -> list[str]:
    """The field paths a field selector may name for `kind`, sorted."""
    return sorted(_GETTERS[check_kind(kind)])


class FieldRequirement(NamedTuple):
    field: str
    equal: bool  # False for !=
    value: str

    def __str__(self) -> str:
        escaped = "".join("\\" + c if c in "\\,=" else c for c in self.value)
        return f"{self.field}{'=' if self.equal else '!='}{escaped}"


class FieldMatcher:
    """Field requirements of one kind that must all hold."""

    __slots__ = ("kind", "requirements", "_checks", "_field")

    def __init__(self, kind: str, requirements: Iterable[FieldRequirement] = ()) -> None:
        self.kind = check_kind(kind)
        self.requirements = tuple(sorted(requirements))
        getters = _GETTERS[kind]
        self._checks = tuple((getters[r.field], r.equal, r.value) for r in self.requirements)
        self._field = KINDS[kind]

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, obj: cluster_pb2.Object) -> bool:
        """False for an object of another kind (unless the matcher is empty)."""
        if not self._checks:
            return True
        if obj.WhichOneof("kind") != self._field:
            return False
        for get, equal, value in self._checks:
            if (get(obj) == value) is not equal:
                return False
        return True

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"FieldMatcher({self.kind!r}, {str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldMatcher):
            return NotImplemented
        return (self.kind, self.requirements) == (other.kind, other.requirements)

    def __hash__(self) -> int:
        return hash((self.kind, self.requirements))


def _split_unescaped(text: str, sep: str) -> list[tuple[str, int]]:
    """Parts of `text` between unescaped `sep`, each with its start position."""
    parts: list[tuple[str, int]] = []
    start, i = 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == sep:
            parts.append((text[start:i], start))
            start = i + 1
        i += 1
    parts.append((text[start:], start))
    return parts


def _unescape(text: str, where: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\,=!":
                raise SelectorError(f"{where}: a \\ must be followed by \\, \",\", = or !")
            out.append(text[i + 1])
            i += 2
            continue
        if c in ",=":
            raise SelectorError(f'{where}: "{c}" in a value must be escaped as \\{c}')
        out.append(c)
        i += 1
    return "".join(out)


def _find_operator(part: str) -> tuple[int, str] | None:
    i = 0
    while i < len(part):
        if part[i] == "\\":
            i += 2
            continue
        for op in ("!=", "==", "="):
            if part.startswith(op, i):
                return i, op
        i += 1
    return None


def parse_field_selector(text: str, kind: str) -> FieldMatcher:
    """The matcher for a field selector on objects of `kind`; "" matches every object.

    SelectorError names the position of bad syntax, or the unknown field with
    the fields `kind` supports.
    """
    getters = _GETTERS[check_kind(kind)]
    requirements: list[FieldRequirement] = []
    if not text.strip():
        return FieldMatcher(kind)
    for part, start in _split_unescaped(text, ","):
        where = f'field selector "{text}" at position {start}'
        found = _find_operator(part)
        if found is None:
            raise SelectorError(f'{where}: expected "field=value" or "field!=value", '
                                f'found "{part.strip()}"')
        at, op = found
        field = part[:at].strip()
        if field not in getters:
            known = ", ".join(sorted(getters))
            raise SelectorError(f'{where}: "{field}" is not a field of {kind} a selector can '
                                f"use (it can use {known})")
        value = _unescape(part[at + len(op):].strip(), where)
        requirements.append(FieldRequirement(field, op != "!=", value))
    return FieldMatcher(kind, requirements)

