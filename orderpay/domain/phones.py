"""Phone numbers: normalised to E.164 with `phonenumbers`, masked for logs."""

from __future__ import annotations

import re

from orderpay.errors import InvalidPhone

MAX_PHONE_INPUT_LENGTH = 32
_DIGITS_ONLY = re.compile(r"[0-9]{8,15}")
# Digits and the separators people write; no letters (phonenumbers would read vanity numbers).
_DIALLABLE = re.compile(r"\+?[0-9 ()./-]+")


def normalise_phone(raw: str, default_region: str) -> str:
    """Return the E.164 form of a phone number, or raise InvalidPhone.

    Local numbers are read in `default_region`. A bare international MSISDN without '+'
    (how MTN writes its sandbox numbers, e.g. 46733123450) is accepted when it is not a valid
    local number but is a valid international one.
    """
    import phonenumbers

    text = raw.strip()
    if not text or len(text) > MAX_PHONE_INPUT_LENGTH or not _DIALLABLE.fullmatch(text):
        raise InvalidPhone(f"{raw!r} is not a phone number")
    candidates = [text]
    if _DIGITS_ONLY.fullmatch(text):
        candidates.append("+" + text)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, default_region.upper())
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhone(
        f"{raw!r} is not a valid phone number (local numbers are read as {default_region.upper()})"
    )


def mask_phone(e164: str) -> str:
    """+233241234567 -> +233*****4567: enough to tell numbers apart in a log, not to dial.

    At most a third of the characters show at either end, however short the number.
    """
    shown = min(4, len(e164) // 3)
    return e164[:shown] + "*" * (len(e164) - 2 * shown) + e164[len(e164) - shown :]


def msisdn(e164: str) -> str:
    """The MSISDN form providers want: E.164 without the '+'."""
    return e164.removeprefix("+")
