"""Reading request bodies with a hard size limit, before anything looks inside them."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from orderpay.errors import BodyTooLarge, InvalidPayload

# Callbacks and API requests are a few hundred bytes; anything near this is not one of ours.
MAX_BODY_BYTES = 64 * 1024


def check_declared_length(headers: Mapping[str, str], limit: int = MAX_BODY_BYTES) -> None:
    """Refuse (413) a body whose Content-Length already says it exceeds `limit`."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidPayload("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge(f"the body is larger than {limit // 1024} KiB")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed `limit`."""
    check_declared_length(request.headers, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_asgi_body(
    headers: Mapping[str, str], receive: Receive, limit: int = MAX_BODY_BYTES
) -> bytes:
    """read_body for a bare ASGI handler (http/momo_route.py): the same limit and errors.
    Raises ClientDisconnect when the client goes away before the body is complete."""
    check_declared_length(headers, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit // 1024} KiB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
