"""The vocabulary of validation: errors naming their field, and the report the
checks add to (scheduler/api/validation.py and validate_pods.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import NamedTuple

from proto.podium.v1 import meta_pb2
from proto.quantity import QuantityError, parse_quantity
from scheduler.api import names


class FieldError(NamedTuple):
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Invalid(ValueError):
    """An object that may not be stored; str() is "<field>: <message>" per error, joined by "; "."""

    def __init__(self, field: str, message: str, errors: Sequence[FieldError] = ()) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors) or (FieldError(field, message),)
        self.field = self.errors[0].field
        self.message = self.errors[0].message
        super().__init__("; ".join(str(e) for e in self.errors))


IMMUTABLE = "field is immutable"
PROTOCOLS = ("TCP", "UDP", "SCTP")
# What the agent turns into cgroup limits or counts for placement.
RESOURCES = ("cpu", "memory", "ephemeral-storage")
ANNOTATIONS_MAX_BYTES = 256 * 1024
FIELD_REF_PATHS = frozenset({"metadata.name", "metadata.namespace", "metadata.uid",
                             "spec.nodeName", "spec.serviceAccountName", "status.podIP",
                             "status.podIPs", "status.hostIP", "status.hostIPs"})
RESOURCE_REF_NAMES = frozenset({f"{part}.{name}" for part in ("limits", "requests")
                                for name in RESOURCES})
NODE_PORT_RANGE = (30000, 32767)


class Report:
    """What the checks found: errors (each naming its field) and warnings."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.warnings: list[str] = []

    def error(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field, message))

    def warn(self, field: str, message: str) -> None:
        self.warnings.append(f"{field}: {message}")

    def name(self, field: str, value: str, why_not: Callable[[str], str | None]) -> None:
        why = why_not(value)
        if why is not None:
            self.error(field, why)

    def labels(self, labels: Mapping[str, str], field: str) -> None:
        for key, value in labels.items():
            self.name(field, key, names.why_not_qualified_name)
            self.name(f"{field}[{key}]", value, names.why_not_label_value)

    def required(self, field: str, value: object) -> bool:
        if not value:
            self.error(field, "required")
        return bool(value)

    def one_of(self, field: str, value: str, allowed: Sequence[str]) -> None:
        """`value` must be "" or one of `allowed`."""
        if value and value not in allowed:
            self.error(field, f'"{value}" is not one of {", ".join(allowed)}')

    def at_least(self, field: str, value: int, low: int = 0) -> None:
        if value < low:
            self.error(field, f"{value} must be at least {low}")

    def port(self, field: str, value: int) -> None:
        if not 1 <= value <= 65535:
            self.error(field, f"{value} is not a port number (1 to 65535)")

    def port_or_name(self, field: str, value: meta_pb2.IntOrString) -> None:
        which = value.WhichOneof("value")
        if which is None:
            self.error(field, "required")
        elif which == "int_value":
            self.port(field, value.int_value)
        else:
            self.name(field, value.str_value, names.why_not_port_name)

    def ip(self, field: str, value: str, *, v4_only: bool = False) -> None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            self.error(field, f'"{value}" is not an IP address')
            return
        if v4_only and address.version != 4:
            self.error(field, f'"{value}" is not an IPv4 address')

    def cidr(self, field: str, value: str) -> None:
        try:
            ipaddress.ip_network(value)
        except ValueError as e:
            self.error(field, f'"{value}" is not a CIDR ({e})')

    def quantity(self, field: str, value: str) -> Decimal | None:
        try:
            number = parse_quantity(value)
        except QuantityError as e:
            self.error(field, str(e))
            return None
        if number < 0:
            self.error(field, f'"{value}" must not be negative')
            return None
        return number
