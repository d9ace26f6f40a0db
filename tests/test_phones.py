"""Phone numbers: E.164 normalisation with a default region, MTN sandbox MSISDNs, masking."""

from __future__ import annotations

import re

import pytest

from orderpay.domain.phones import mask_phone, msisdn, normalise_phone
from orderpay.errors import InvalidPhone


@pytest.mark.parametrize(
    "raw",
    ["0241234567", "024 123 4567", "024-123-4567", "+233 24 123 4567", "+233241234567"],
)
def test_ghana_number_is_stored_as_e164(raw: str) -> None:
    e164 = normalise_phone(raw, "GH")

    assert e164 == "+233241234567"


def test_bare_international_digits_are_read_as_international() -> None:
    e164 = normalise_phone("233241234567", "GH")

    assert e164 == "+233241234567"


@pytest.mark.parametrize("raw", ["+46 73 312 34 50", "+46733123450", "46733123450"])
def test_mtn_sandbox_number_is_accepted(raw: str) -> None:
    e164 = normalise_phone(raw, "GH")

    assert e164 == "+46733123450"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12",
        "024123456",  # one digit short
        "02412345678",  # one digit too many
        "not a phone",
        "+233 12",
        "+999 241234567",  # no such country code
        "0" * 40,
    ],
)
def test_invalid_number_is_refused(raw: str) -> None:
    with pytest.raises(InvalidPhone) as refused:
        normalise_phone(raw, "GH")

    assert refused.value.code == "invalid_phone"


def test_uganda_as_default_region_reads_local_numbers_as_ugandan() -> None:
    e164 = normalise_phone("0772123456", "UG")

    assert e164 == "+256772123456"


def test_the_same_local_digits_mean_different_numbers_in_ghana_and_uganda() -> None:
    in_ghana = normalise_phone("0201234567", "GH")
    in_uganda = normalise_phone("0201234567", "UG")

    assert (in_ghana, in_uganda) == ("+233201234567", "+256201234567")


def test_ugandan_local_number_is_refused_when_the_default_region_is_ghana() -> None:
    with pytest.raises(InvalidPhone, match="GH"):
        normalise_phone("0772123456", "GH")


def test_default_region_is_case_insensitive() -> None:
    e164 = normalise_phone("0241234567", "gh")

    assert e164 == "+233241234567"


def test_an_international_number_ignores_the_default_region() -> None:
    e164 = normalise_phone("+233241234567", "UG")

    assert e164 == "+233241234567"


def test_masked_ghana_number_shows_only_country_code_and_last_four_digits() -> None:
    assert mask_phone("+233241234567") == "+233*****4567"


@pytest.mark.parametrize(
    "raw",
    [
        "+233241234567",  # Ghana
        "+256772123456",  # Uganda
        "+46733123450",  # MTN sandbox
        "+29051234",  # Saint Helena: 9 characters
        "+690 7290",  # Tokelau: one of the shortest valid E.164 numbers, 8 characters
    ],
)
def test_masking_never_reveals_the_full_number(raw: str) -> None:
    e164 = normalise_phone(raw, "GH")

    masked = mask_phone(e164)

    assert masked != e164
    assert "*" in masked
    assert len(re.sub(r"\D", "", masked)) < len(re.sub(r"\D", "", e164))


def test_msisdn_is_e164_without_the_plus() -> None:
    assert msisdn("+46733123450") == "46733123450"
