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


# A phone number inside stored text: an optional + (or %2B, its form encoding), then 8-15
# digits, grouped by single spaces or hyphens or not at all, standing on its own: not the end
# of a word, a decimal or a number already masked. UUIDs and dates are matched first and
# kept, so that no phone number is read into their digits.
_IN_TEXT = re.compile(
    r"(?P<kept>[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"|(?<![\w.*+])(?P<prefix>\+|%2[Bb])?(?P<run>[0-9](?:[ -]?[0-9]){7,14})(?![\w*]|\.[0-9])"
)
_GROUPS = re.compile(r"([ -])")


def mask_phones_in(text: str, default_region: str) -> str:
    """`text` with each phone number in it masked as `mask_phone` masks one.

    Found: E.164 (+233241234567, +233 24 123 4567, %2B233241234567 in a form body), bare
    MSISDNs (233241234567, 46733123450) and local numbers of `default_region` (0241234567,
    024-123-4567). Digits that no numbering plan knows as a phone are left as they are, and so
    is a national number written without its leading 0 (241234567: as often an id as a phone).
    """
    return _IN_TEXT.sub(lambda found: _masked(found, default_region), text)


def mask_if_phone(value: str, default_region: str) -> str:
    """`value` masked if it is, as a whole, one phone number (a recipient); else unchanged."""
    found = _IN_TEXT.fullmatch(value)
    return value if found is None else _masked(found, default_region)


def _masked(found: re.Match[str], region: str) -> str:
    if found.group("kept"):
        return found.group(0)
    prefix, run = found.group("prefix") or "", found.group("run")
    tokens = _GROUPS.split(run)  # digits, break, digits, ...
    count = (len(tokens) + 1) // 2
    # The whole run; else spaces may have run a phone number into the numbers around it
    # ("0241234567 2 times"): the longest run of whole groups that is one, then look again on
    # either side of it.
    for length in range(count, 0, -1):
        for start in range(count - length + 1):
            lead = prefix if start == 0 else ""
            digits = "".join(tokens[2 * start : 2 * (start + length) : 2])
            if not _is_phone(lead, digits, region):
                continue
            shown = mask_phone("+" + digits)[1:] if lead else mask_phone(digits)
            if length == count:
                return lead + shown
            end = start + length
            left = prefix + "".join(tokens[: 2 * start - 1]) if start else ""
            before = tokens[2 * start - 1] if start else ""
            after = tokens[2 * end - 1] if end < count else ""
            right = "".join(tokens[2 * end :])
            return (
                mask_phones_in(left, region)
                + before
                + lead
                + shown
                + after
                + mask_phones_in(right, region)
            )
    return found.group(0)


def _is_phone(prefix: str, digits: str, region: str) -> bool:
    import phonenumbers

    if not 8 <= len(digits) <= 15:
        return False
    try:
        if prefix:  # written as international: a possible number is enough
            return bool(phonenumbers.is_possible_number(phonenumbers.parse("+" + digits)))
        if digits.startswith("0"):  # a local number, or 00 and an international one
            return bool(phonenumbers.is_valid_number(phonenumbers.parse(digits, region.upper())))
        return bool(phonenumbers.is_valid_number(phonenumbers.parse("+" + digits)))
    except phonenumbers.NumberParseException:
        return False
