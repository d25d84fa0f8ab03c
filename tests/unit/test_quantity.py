"""Kubernetes quantities: suffixes, exponents, rounding, and what is refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proto.quantity import QuantityError, parse_bytes, parse_milli_cpu, parse_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("1", Decimal(1)), ("500m", Decimal("0.5")), ("0.5", Decimal("0.5")),
    ("128Mi", Decimal(128 * 2**20)), ("1Gi", Decimal(2**30)), ("1Ki", Decimal(1024)),
    ("1e3", Decimal(1000)), ("1E3", Decimal(1000)), ("2k", Decimal(2000)),
    ("1M", Decimal(10**6)), ("3G", Decimal(3 * 10**9)), ("1Ei", Decimal(2**60)),
    ("100n", Decimal("1E-7")), ("5u", Decimal("0.000005")), (".5", Decimal("0.5")),
    ("1.5Gi", Decimal(3 * 2**29)), ("+4", Decimal(4)), ("1e-3", Decimal("0.001")),
])
def test_parses(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "12Zi", "1.2.3", "Mi", "1 Mi", "1mi", "abc", "1e", "--1",
                                  "1KiB", "1e99999"])
def test_refuses(text: str) -> None:
    with pytest.raises(QuantityError, match="is (not a quantity|out of range)"):
        parse_quantity(text)


def test_message_quotes_the_text() -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity("12Zi")
    assert str(info.value) == '"12Zi" is not a quantity'


def test_bytes_round_up_and_refuse_negatives() -> None:
    assert parse_bytes("128Mi") == 134217728
    assert parse_bytes("1.5") == 2
    assert parse_bytes("1e3") == 1000
    with pytest.raises(QuantityError, match="negative"):
        parse_bytes("-1Mi")


def test_milli_cpu() -> None:
    assert parse_milli_cpu("500m") == 500
    assert parse_milli_cpu("1") == 1000
    assert parse_milli_cpu("1.5") == 1500
    assert parse_milli_cpu("0.1m") == 1  # rounded up, never to zero
    assert parse_milli_cpu("2e0") == 2000
