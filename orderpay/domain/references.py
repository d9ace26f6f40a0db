"""Our short reference for a provider that shows it to the payer and takes few characters
(M-Pesa's AccountReference: at most 12). Pure."""

from __future__ import annotations

import uuid

# Crockford's base32 without I, L, O and U (a payer reading it aloud cannot confuse them), and
# without E, M and Q too: the reference travels in callback URLs, where M-Pesa refuses words
# such as "mpesa", "exec", "cmd", "sql" and "query"; without those letters none can be spelled.
ALPHABET = "0123456789ABCDFGHJKNPRSTVWXYZ"
LENGTH = 12


def short_reference(row_id: uuid.UUID) -> str:
    """12 characters from the row's id (a uuid4, whose last 62 bits are random: 29**12, about
    58 bits, of them); unique in practice, and the schema enforces it per provider."""
    value = (row_id.int & ((1 << 62) - 1)) % len(ALPHABET) ** LENGTH
    out = []
    for _ in range(LENGTH):
        value, digit = divmod(value, len(ALPHABET))
        out.append(ALPHABET[digit])
    return "".join(reversed(out))
