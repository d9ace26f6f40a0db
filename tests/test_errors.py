"""The error hierarchy: one category per error, one HTTP status and exit code per category."""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator

import pytest

import orderpay.cli  # noqa: F401  (imports every module that may define errors)
from orderpay import errors
from orderpay.errors import CATEGORIES, OrderpayError, category_of

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _all_subclasses(cls: type[OrderpayError]) -> list[type[OrderpayError]]:
    found: list[type[OrderpayError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


# Concrete errors are the ones code raises: the leaves of the hierarchy. Two categories are
# raised themselves: idempotency_key_reused (a leaf) and payment_declined (whose subclass
# refund_declined is a leaf); _by_code finds either.
CONCRETE = sorted(
    {cls for cls in _all_subclasses(OrderpayError) if not cls.__subclasses__()},
    key=lambda cls: cls.__name__,
)
CONCRETE_IDS = [cls.__name__ for cls in CONCRETE]

# DESIGN.md section 7: category -> (HTTP status, CLI exit code).
DESIGN_TABLE = {
    errors.InvalidInput: (400, 2),
    errors.NotFound: (404, 3),
    errors.Conflict: (409, 4),
    errors.IdempotencyKeyReused: (422, 5),
    errors.PaymentDeclined: (402, 6),
    errors.Unavailable: (503, 7),
}

# Error codes DESIGN.md section 7 names, with the status and exit code of their row.
DESIGN_CODES = [
    ("invalid_phone", 400, 2),
    ("invalid_amount", 400, 2),
    ("unknown_currency", 400, 2),
    ("invalid_quantity", 400, 2),
    ("idempotency_key_missing", 400, 2),
    ("order_not_found", 404, 3),
    ("customer_not_found", 404, 3),
    ("product_not_found", 404, 3),
    ("payment_not_found", 404, 3),
    ("payment_in_progress", 409, 4),
    ("order_already_paid", 409, 4),
    ("order_cancelled", 409, 4),
    ("idempotency_key_in_use", 409, 4),
    ("idempotency_key_reused", 422, 5),
    ("payment_declined", 402, 6),
    ("database_unavailable", 503, 7),
]


def _by_code(code: str) -> type[OrderpayError]:
    matches = [cls for cls in _all_subclasses(OrderpayError) if cls.code == code]
    assert len(matches) == 1, f"{code}: {matches}"
    return matches[0]


def test_there_are_concrete_errors_to_check() -> None:
    assert len(CONCRETE) >= 25


@pytest.mark.parametrize("error_class", CONCRETE, ids=CONCRETE_IDS)
def test_every_concrete_error_belongs_to_exactly_one_category(
    error_class: type[OrderpayError],
) -> None:
    category = category_of(error_class)

    assert category in CATEGORIES
    assert [c for c in CATEGORIES if issubclass(error_class, c)] == [category]


@pytest.mark.parametrize("error_class", CONCRETE, ids=CONCRETE_IDS)
def test_every_concrete_error_keeps_its_categorys_status_and_exit_code(
    error_class: type[OrderpayError],
) -> None:
    category = category_of(error_class)

    assert (error_class.http_status, error_class.exit_code) == (
        category.http_status,
        category.exit_code,
    )


@pytest.fixture
def ambiguous_error() -> Iterator[type[OrderpayError]]:
    """An error in two categories, removed again so no other test sees it as a subclass."""
    ambiguous = type("Ambiguous", (errors.InvalidInput, errors.NotFound), {"code": "ambiguous"})
    yield ambiguous
    del ambiguous
    gc.collect()


def test_an_error_in_two_categories_is_detected(ambiguous_error: type[OrderpayError]) -> None:
    with pytest.raises(TypeError, match="2 categories"):
        category_of(ambiguous_error)


def test_an_error_in_no_category_is_detected() -> None:
    with pytest.raises(TypeError, match="0 categories"):
        category_of(OrderpayError)


@pytest.mark.parametrize(
    ("category", "status_and_exit"),
    list(DESIGN_TABLE.items()),
    ids=[category.__name__ for category in DESIGN_TABLE],
)
def test_category_status_and_exit_code_match_the_design_table(
    category: type[OrderpayError], status_and_exit: tuple[int, int]
) -> None:
    assert (category.http_status, category.exit_code) == status_and_exit


@pytest.mark.parametrize(("code", "status", "exit_code"), DESIGN_CODES)
def test_error_code_named_in_the_design_has_the_status_and_exit_code_of_its_row(
    code: str, status: int, exit_code: int
) -> None:
    error_class = _by_code(code)

    assert (error_class.http_status, error_class.exit_code) == (status, exit_code)


def test_every_category_exit_code_is_a_documented_failure_code() -> None:
    exit_codes = {category.exit_code for category in CATEGORIES}

    assert exit_codes <= {2, 3, 4, 5, 6, 7}


def test_concrete_error_codes_are_unique() -> None:
    codes = [cls.code for cls in CONCRETE]

    assert sorted(codes) == sorted(set(codes))


@pytest.mark.parametrize("error_class", CONCRETE, ids=CONCRETE_IDS)
def test_concrete_error_code_is_snake_case(error_class: type[OrderpayError]) -> None:
    assert SNAKE_CASE.fullmatch(error_class.code)


def test_error_document_carries_code_message_and_details() -> None:
    error = errors.OrderNotFound("order 42 does not exist", order="42")

    document = error.to_dict()

    assert document == {
        "error": {"code": "order_not_found", "message": "order 42 does not exist", "order": "42"}
    }
