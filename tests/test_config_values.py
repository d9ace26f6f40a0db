"""How a setting's text becomes its value: pydantic's rules, kept without loading pydantic.

orderpay.config_values reads settings by hand so that a command does not load pydantic; these
tests hold it to pydantic's own answers (pydantic is installed: Typer uses it), value by value.
"""

from __future__ import annotations

from typing import Annotated, Any

import phonenumbers
import pytest
from pydantic import Field, TypeAdapter, ValidationError

from orderpay.config_values import PHONE_REGIONS, BadValue, Secret, Setting

TEXTS = [
    *("0", "1", "-3", "+7", "007", " 5 ", "5.0", "5.00", "5.10", "5.", "1_000", "1__0", "_1"),
    *("5_", "0x10", "1e3", "1e400", ".5", "2.5", " 2.5 ", "1_0.5", "inf", "+inf", "-inf"),
    *("Infinity", "nan", " nan", "", " ", "abc", "\u0665", "3601", "60", "60.5", "-0"),
    *("true", "True", "YES", "no", "on", "off", "t", "f", "y", "n", " 1 ", "2", "1.0", "0.0"),
]
PYTHON_VALUES = [None, True, False, 0, 1, 2, 5.0, 5.5, -1.5]
BOUNDS = [{}, {"ge": 0}, {"gt": 0, "le": 60}, {"ge": 1, "le": 3600}, {"ge": 1}]


def pydantic_says(kind: type, bounds: dict[str, float], value: Any) -> tuple[str, Any]:
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[kind, Field(**bounds)])  # type: ignore[valid-type]
    try:
        return "value", adapter.validate_python(value)
    except ValidationError as error:
        return "refused", error.errors()[0]["msg"]


def orderpay_says(kind: type, bounds: dict[str, float], value: Any) -> tuple[str, Any]:
    try:
        return "value", Setting("X", kind, default=0, **bounds).read(value)
    except BadValue as error:
        return "refused", str(error)


def same(answer: tuple[str, Any]) -> tuple[str, Any]:
    # NaN is not equal to itself; compare its text.
    outcome, value = answer
    return outcome, repr(value) if isinstance(value, float) else value


@pytest.mark.parametrize("bounds", BOUNDS, ids=str)
@pytest.mark.parametrize("kind", [int, float])
@pytest.mark.parametrize("value", TEXTS + PYTHON_VALUES, ids=repr)
def test_a_number_setting_reads_and_refuses_what_pydantic_does(
    kind: type, bounds: dict[str, float], value: Any
) -> None:
    assert same(orderpay_says(kind, bounds, value)) == same(pydantic_says(kind, bounds, value))


@pytest.mark.parametrize("value", TEXTS + PYTHON_VALUES, ids=repr)
def test_a_yes_no_setting_reads_and_refuses_what_pydantic_does(value: Any) -> None:
    assert orderpay_says(bool, {}, value) == pydantic_says(bool, {}, value)


@pytest.mark.parametrize("value", [*TEXTS[:5], 5, 5.0, True])
def test_a_text_setting_takes_text_only(value: Any) -> None:
    assert orderpay_says(str, {}, value) == pydantic_says(str, {}, value)


def test_a_choice_setting_names_every_choice_when_it_refuses() -> None:
    setting = Setting("ORDERPAY_NOTIFY_CHANNEL", ("log", "sms", "webhook"), default="log")

    with pytest.raises(BadValue) as refused:
        setting.read("fax")

    assert str(refused.value) == "Input should be 'log', 'sms' or 'webhook'"
    assert setting.read("sms") == "sms"


def test_a_secret_never_shows_its_value() -> None:
    secret = Setting("ORDERPAY_API_TOKEN", Secret, default=None).read("tok-Fufu-s3cr3t")

    assert isinstance(secret, Secret)
    assert secret.get_secret_value() == "tok-Fufu-s3cr3t"
    assert "Fufu" not in repr(secret) + str(secret) + f"{secret}"


def test_the_phone_regions_are_those_phonenumbers_supports() -> None:
    assert PHONE_REGIONS == phonenumbers.SUPPORTED_REGIONS
