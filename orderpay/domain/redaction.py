"""Phone numbers masked in stored bodies (`orderpay db prune`): callbacks, delivery reports
and the messages sent, kept readable in the form they came in.

A JSON body stays JSON and a form body stays a form: only the values change, and never the
values of fields that name ids, references, amounts, currencies, statuses, keys or times
(a transaction id can be all digits, and an MSISDN-like one is still no phone). Any other text
is masked where phone numbers appear in it (phones.mask_phones_in).

Log lines that quote a URL (a database or Redis server's) show it without its password
(redact_urls).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from orderpay.domain.phones import mask_if_phone, mask_phones_in

# Field names (lower case, letters and digits only) whose values are kept as they are.
_KEPT_FIELD = re.compile(
    r"id|order|payment|notification|.*(?:transactionid|reference|referenceid|externalid|orderid"
    r"|paymentid|messageid|eventid|amount|currency|status|key|signature|timestamp|createdat"
    r"|updatedat|receivedat)"
)
_FORM = re.compile(r"[^=&\s]+=[^&\s]*(?:&[^=&\s]+=[^&\s]*)*")
# A URL's user and password (scheme://user:password@host): the password is what is hidden.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*):[^\s/]*@")


def mask_payload(text: str, default_region: str) -> str:
    """`text` with the phone numbers in it masked: a JSON object or array field by field, a
    form body (a=1&b=2) value by value, anything else as free text."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            document = json.loads(text)
        except ValueError:
            pass
        else:
            masked = _masked_json(document, None, default_region)
            return text if masked == document else json.dumps(masked, ensure_ascii=False)
    if _FORM.fullmatch(stripped):
        return "&".join(_masked_pair(pair, default_region) for pair in text.split("&"))
    return mask_phones_in(text, default_region)


def redact_urls(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (postgresql://u:***@h),
    as SQLAlchemy shows a URL; the user and host stay, to tell which server was meant."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def _kept(field: str | None) -> bool:
    normalised = re.sub(r"[^a-z0-9]", "", (field or "").lower())
    return field is not None and _KEPT_FIELD.fullmatch(normalised) is not None


def _masked_json(value: Any, field: str | None, region: str) -> Any:
    if isinstance(value, dict):
        return {name: _masked_json(item, name, region) for name, item in value.items()}
    if isinstance(value, list):
        return [_masked_json(item, field, region) for item in value]
    if _kept(field):
        return value
    if isinstance(value, str):
        return mask_phones_in(value, region)
    if isinstance(value, int) and not isinstance(value, bool):
        # An MSISDN sent as a JSON number: masked, it can only be a string.
        masked = mask_if_phone(str(value), region)
        return value if masked == str(value) else masked
    return value


def _masked_pair(pair: str, region: str) -> str:
    name, _, raw = pair.partition("=")
    if _kept(unquote_plus(name)):
        return pair
    value = unquote_plus(raw)
    masked = mask_phones_in(value, region)
    return pair if masked == value else f"{name}={quote_plus(masked, safe='*')}"
