"""Kubernetes resource quantities: ``500m``, ``1``, ``128Mi``, ``1Gi``, ``1e3``, ``0.5``.

A quantity is a decimal number and an optional suffix: binary (``Ki`` … ``Ei``,
powers of 1024), decimal SI (``n``, ``u``, ``m``, ``k``, ``M``, ``G``, ``T``,
``P``, ``E``) or a decimal exponent (``e3``, ``E-2``). Values are exact
``Decimal``s; callers round up to whole units as the kubelet does, so ``0.5m``
of CPU is 1 milli-CPU and ``1.5Ki`` of memory 1536 bytes.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
            "E": 18}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?[0-9]+)|(?P<si>[numkMGTPE]?))$"
)


class QuantityError(ValueError):
    """Not a quantity; the message quotes the text (``"12Zi" is not a quantity``)."""


def parse_quantity(text: str) -> Decimal:
    match = _QUANTITY.match(text.strip()) if len(text) <= 64 else None
    if match is None:
        raise QuantityError(f'"{text}" is not a quantity')
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # the pattern admits only numbers; kept for safety
        raise QuantityError(f'"{text}" is not a quantity') from None
    if match["binary"]:
        return number * (Decimal(1024) ** _BINARY[match["binary"]])
    if match["exp"]:
        exponent = int(match["exp"][1:])
        if abs(exponent) > 30:
            raise QuantityError(f'"{text}" is out of range')
        return number.scaleb(exponent)
    return number.scaleb(_DECIMAL[match["si"] or ""])


def parse_bytes(text: str) -> int:
    """A memory quantity in whole bytes, rounded up; refuses negatives."""
    value = parse_quantity(text)
    if value < 0:
        raise QuantityError(f'"{text}" is negative')
    return math.ceil(value)


def parse_milli_cpu(text: str) -> int:
    """A CPU quantity in milli-CPUs, rounded up (``"250m"`` → 250, ``"1.5"`` → 1500)."""
    value = parse_quantity(text)
    if value < 0:
        raise QuantityError(f'"{text}" is negative')
    return math.ceil(value * 1000)
