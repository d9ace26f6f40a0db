"""Validation of free-text fields, ids and JSON bodies shared by every entrypoint.

One parser per thing: every UUID a user or a sender gives goes through `as_uuid`, every JSON
body through `json_object`.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from orderpay.errors import InvalidField, InvalidInput, InvalidPayload

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


def as_uuid(raw: object) -> uuid.UUID | None:
    """The UUID `raw` spells (a string, any case, surrounding blanks ignored), else None."""
    if not isinstance(raw, str):
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        return None


def parse_uuid(raw: object, what: str, *, error: type[InvalidInput] = InvalidField) -> uuid.UUID:
    """Parse a UUID given by a user or a sender; `what` names it in the error ('order id')."""
    parsed = as_uuid(raw)
    if parsed is None:
        shown = repr(raw) if len(repr(raw)) <= 60 else repr(raw)[:57] + "..."
        raise error(f"{shown} is not a valid {what} (expected a UUID)", field=what)
    return parsed


def json_object(body: bytes) -> tuple[dict[str, Any], str]:
    """A request body that must be one JSON object: (the object, the body's text)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("the body is not UTF-8") from None
    if "\x00" in text:
        raise InvalidPayload("the body contains NUL characters")
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidPayload("the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise InvalidPayload("the body must be a JSON object")
    return document, text
