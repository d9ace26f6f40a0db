"""Our short reference for a provider that shows it to the payer and takes few characters
(M-Pesa's AccountReference: at most 12). Pure."""

from __future__ import annotations

import uuid

# Crockford's base32: no I, L, O or U, so a payer reading it aloud cannot confuse them.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 12


def short_reference(row_id: uuid.UUID) -> str:
    """12 characters from the row's id (a uuid4: its first 60 bits, 56 of them random);
    unique in practice, and the schema enforces it per provider."""
    bits = row_id.int >> (128 - 5 * LENGTH)
    return "".join(_ALPHABET[(bits >> (5 * (LENGTH - 1 - n))) & 31] for n in range(LENGTH))
