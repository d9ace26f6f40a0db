"""Reading request bodies with a hard size limit, before anything looks inside them."""

from __future__ import annotations

from starlette.requests import Request

from orderpay.errors import BodyTooLarge, InvalidPayload

# Callbacks and API requests are a few hundred bytes; anything near this is not one of ours.
MAX_BODY_BYTES = 64 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidPayload("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLarge(f"the body is larger than {limit // 1024} KiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)
