"""Money: exact decimal parsing into integer minor units, per-currency exponents, formatting."""

from __future__ import annotations

import pytest

from orderpay.domain.money import MAX_MINOR_UNITS, Money, currency_code, parse_amount
from orderpay.errors import InvalidAmount, UnknownCurrency


@pytest.mark.parametrize(
    ("raw", "currency", "minor_units"),
    [
        ("12.50", "GHS", 1250),
        ("12.5", "GHS", 1250),
        ("12", "GHS", 1200),
        ("0.01", "GHS", 1),
        ("0", "GHS", 0),
        ("3000", "UGX", 3000),
        ("1500", "XOF", 1500),
        ("99.99", "EUR", 9999),
    ],
)
def test_amount_is_parsed_exactly_into_minor_units(
    raw: str, currency: str, minor_units: int
) -> None:
    money = parse_amount(raw, currency)

    assert money == Money(minor_units, currency)


def test_amount_that_floats_cannot_represent_is_still_exact() -> None:
    money = parse_amount("0.29", "GHS")

    assert money.minor_units == 29  # int(0.29 * 100) == 28 with floats


def test_surrounding_white_space_is_ignored() -> None:
    money = parse_amount("  12.50 ", "GHS")

    assert money == Money(1250, "GHS")


@pytest.mark.parametrize(
    ("raw", "currency"),
    [("12.505", "GHS"), ("0.001", "EUR"), ("10.5", "UGX"), ("3000.1", "UGX"), ("1.01", "RWF")],
)
def test_amount_with_more_decimals_than_the_currency_allows_is_refused(
    raw: str, currency: str
) -> None:
    with pytest.raises(InvalidAmount) as refused:
        parse_amount(raw, currency)

    assert refused.value.code == "invalid_amount"


@pytest.mark.parametrize("raw", ["-1.00", "-0.01", "-3000", "-0"])
def test_negative_amount_is_refused(raw: str) -> None:
    with pytest.raises(InvalidAmount, match="negative"):
        parse_amount(raw, "GHS")


@pytest.mark.parametrize("raw", ["NaN", "nan", "sNaN", "Infinity", "inf", "-Infinity"])
def test_nan_and_infinity_are_refused(raw: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(raw, "GHS")


@pytest.mark.parametrize("raw", ["1e3", "1E3", "125e-1", "0e0"])
def test_exponent_notation_is_refused(raw: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(raw, "UGX")


@pytest.mark.parametrize(
    "raw", ["", "   ", "abc", "12,50", "12.50 GHS", "GHS 12.50", "1.2.3", "0x10", "--1", "12..5"]
)
def test_garbage_amount_is_refused(raw: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(raw, "GHS")


def test_amount_above_the_largest_storable_is_refused() -> None:
    too_big = str(MAX_MINOR_UNITS + 1)

    with pytest.raises(InvalidAmount, match="larger"):
        parse_amount(too_big, "UGX")


def test_the_largest_storable_amount_is_accepted() -> None:
    money = parse_amount(str(MAX_MINOR_UNITS), "UGX")

    assert money.minor_units == MAX_MINOR_UNITS


@pytest.mark.parametrize("currency", ["XYZ", "", "GH", "cedi", "GHSS", "G HS"])
def test_unknown_currency_is_refused(currency: str) -> None:
    with pytest.raises(UnknownCurrency) as refused:
        parse_amount("12.50", currency)

    assert refused.value.code == "unknown_currency"


@pytest.mark.parametrize("currency", ["ghs", "Ghs", " GHS "])
def test_currency_code_is_case_insensitive_and_normalised(currency: str) -> None:
    money = parse_amount("12.50", currency)

    assert money == Money(1250, "GHS")


def test_currency_code_is_upper_cased() -> None:
    assert currency_code("ugx") == "UGX"


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1250, "GHS"), "12.50"),
        (Money(1200, "GHS"), "12.00"),
        (Money(5, "GHS"), "0.05"),
        (Money(0, "EUR"), "0.00"),
        (Money(3000, "UGX"), "3000"),
        (Money(MAX_MINOR_UNITS, "UGX"), str(MAX_MINOR_UNITS)),
    ],
)
def test_money_formats_with_exactly_the_currency_decimals(money: Money, text: str) -> None:
    assert money.as_string() == text


def test_money_prints_with_its_currency() -> None:
    assert str(Money(1250, "GHS")) == "12.50 GHS"


@pytest.mark.parametrize(("raw", "currency"), [("12.50", "GHS"), ("3000", "UGX"), ("0.07", "KES")])
def test_formatting_a_parsed_amount_gives_the_same_text_back(raw: str, currency: str) -> None:
    money = parse_amount(raw, currency)

    assert money.as_string() == raw


@pytest.mark.parametrize("minor_units", [12.5, 1250.0, True, "1250"])
def test_money_refuses_anything_but_an_integer_of_minor_units(minor_units: object) -> None:
    with pytest.raises(TypeError):
        Money(minor_units, "GHS")  # type: ignore[arg-type]
