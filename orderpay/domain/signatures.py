"""Callback signatures: sign and verify, in constant time, against every configured secret.

Three schemes are accepted on `/api/webhooks/momo/` (DESIGN.md section 6):
- `X-Momo-Signature`: lowercase hex HMAC-SHA256 of the raw body, optionally `sha256=`-prefixed;
- the same header over the seed's canonical re-serialisation
  (`json.dumps(parsed, sort_keys=True, separators=(",", ":"))`), for senders built on the seed;
- Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<base64>`
  list) over `"{id}.{timestamp}.{raw body}"`, with a timestamp tolerance.

A secret written `whsec_<base64>` (the Standard Webhooks form) is used as its decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orderpay.errors import InvalidSignature

# Standard Webhooks' reference library rejects timestamps more than five minutes from now:
# long enough for clock skew and a retry, short enough to make a captured request useless.
TOLERANCE_SECONDS = 300
MOMO_HEADER = "x-momo-signature"
SW_ID, SW_TIMESTAMP, SW_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"


@dataclass(frozen=True, slots=True)
class Verified:
    scheme: str  # "hex", "canonical" or "standard-webhooks"
    webhook_id: str | None  # Standard Webhooks' id, stable across retries


def secret_key(secret: bytes) -> bytes:
    if secret.startswith(b"whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except binascii.Error:
            return secret
    return secret


def sign_hex(body: bytes, secret: bytes) -> str:
    return hmac.new(secret_key(secret), body, hashlib.sha256).hexdigest()


def sign_standard(body: bytes, secret: bytes, webhook_id: str, timestamp: int) -> str:
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(
    body: bytes, secret: bytes, webhook_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for a body (used by senders and tests)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        SW_ID: webhook_id,
        SW_TIMESTAMP: str(ts),
        SW_SIGNATURE: sign_standard(body, secret, webhook_id, ts),
    }


def canonical(body: bytes) -> bytes | None:
    """The seed's re-serialisation of a JSON body, or None if it is not JSON."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[bytes],
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> Verified:
    """Accept the request if any scheme verifies with any secret; else InvalidSignature.

    `headers` must be case-insensitive (Starlette's Headers are) or use lowercase names.
    """
    if not secrets:
        raise InvalidSignature("no callback secret is configured")
    if SW_SIGNATURE in headers:
        return _verify_standard(body, headers, secrets, now, tolerance)
    given = headers.get(MOMO_HEADER)
    if not given:
        raise InvalidSignature("missing signature")
    given = given.strip().lower().removeprefix("sha256=")
    if _any_matches(given, body, secrets):
        return Verified("hex", None)
    # Only now, and only to compute a digest, is the body parsed: the seed's senders signed
    # a re-serialisation rather than the bytes they sent.
    reserialised = canonical(body)
    if reserialised is not None and _any_matches(given, reserialised, secrets):
        return Verified("canonical", None)
    raise InvalidSignature("bad signature")


def _any_matches(given: str, content: bytes, secrets: Sequence[bytes]) -> bool:
    matched = False
    for secret in secrets:
        # No early exit: the time taken does not tell which secret (if any) matched.
        matched |= hmac.compare_digest(given.encode(), sign_hex(content, secret).encode())
    return matched


def _verify_standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[bytes],
    now: float | None,
    tolerance: int,
) -> Verified:
    webhook_id = headers.get(SW_ID, "")
    raw_timestamp = headers.get(SW_TIMESTAMP, "")
    if not webhook_id or "." in webhook_id or len(webhook_id) > 255:
        raise InvalidSignature("bad webhook-id")
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()) or len(raw_timestamp) > 12:
        raise InvalidSignature("bad webhook-timestamp")
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignature("webhook-timestamp outside the tolerance")
    offered = [
        part.split(",", 1)[1].encode()
        for part in headers[SW_SIGNATURE].split()
        if part.startswith("v1,")
    ]
    matched = False
    for secret in secrets:
        expected = sign_standard(body, secret, webhook_id, timestamp).split(",", 1)[1].encode()
        for signature in offered:
            matched |= hmac.compare_digest(signature, expected)
    if not matched:
        raise InvalidSignature("bad signature")
    return Verified("standard-webhooks", webhook_id)
