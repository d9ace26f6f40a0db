"""Validation of free-text fields and ids shared by every entrypoint."""

from __future__ import annotations

import re
import uuid

from orderpay.errors import InvalidField

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
# Deliberately loose: the mailbox is the merchant's business; this only catches typos.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# Control characters (NUL included) and lone surrogates: no database should store them, and
# Postgres cannot.
_UNSTORABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def has_unstorable_characters(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


def clean_name(raw: str, what: str = "name") -> str:
    name = raw.strip()
    if not name:
        raise InvalidField(f"{what} must not be empty", field=what)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidField(f"{what} is longer than {MAX_NAME_LENGTH} characters", field=what)
    if has_unstorable_characters(name):
        raise InvalidField(f"{what} must not contain control characters", field=what)
    return name


def clean_email(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    email = raw.strip()
    if (
        len(email) > MAX_EMAIL_LENGTH
        or not _EMAIL.fullmatch(email)
        or has_unstorable_characters(email)
    ):
        raise InvalidField(f"{raw!r} is not an email address", field="email")
    return email


def parse_uuid(raw: str, what: str) -> uuid.UUID:
    """Parse a UUID given by a user; `what` names it in the error ('order id')."""
    try:
        return uuid.UUID(raw.strip())
    except (ValueError, AttributeError):
        raise InvalidField(f"{raw!r} is not a valid {what} (expected a UUID)", field=what) from None
