"""Our short reference (M-Pesa's AccountReference, also in the callback URL we give)."""

from __future__ import annotations

import uuid

import pytest

from orderpay.domain.references import ALPHABET, LENGTH, short_reference
from orderpay.providers.mpesa_config import FORBIDDEN_URL_WORDS


@pytest.mark.parametrize("word", FORBIDDEN_URL_WORDS)
def test_no_reference_can_spell_a_word_daraja_refuses_in_a_callback_url(word: str) -> None:
    assert set(word.upper()) - set(ALPHABET)


def test_a_reference_is_twelve_letters_and_digits_a_payer_can_read_aloud() -> None:
    references = [short_reference(uuid.uuid4()) for _ in range(1000)]

    assert {len(r) for r in references} == {LENGTH}
    assert set("".join(references)) <= set(ALPHABET)
    assert not set("ILOU") & set(ALPHABET)


def test_references_of_different_rows_differ() -> None:
    assert len({short_reference(uuid.uuid4()) for _ in range(10_000)}) == 10_000


def test_a_row_always_has_the_same_reference() -> None:
    row = uuid.uuid4()

    assert short_reference(row) == short_reference(row)
