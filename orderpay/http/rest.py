"""The seed's REST API, same paths and field names, behind a bearer token.

`POST /api/orders/` (Idempotency-Key optional), `GET /api/orders/{id}/`,
`POST /api/payments/charge/`, and `POST /api/payments/{id}/refunds/`. The same service
functions as the CLI; the same JSON shapes (orderpay/shapes.py). With ORDERPAY_API_TOKEN
unset, every route answers 404, as if the API did not exist.
"""

from __future__ import annotations

import hmac
import uuid
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orderpay.config_values import PROVIDER_NAMES
from orderpay.domain.idempotency import check_key
from orderpay.domain.validation import as_uuid, json_object, parse_uuid
from orderpay.errors import (
    InvalidField,
    InvalidQuantity,
    InvalidToken,
    OrderNotFound,
    PaymentNotFound,
    RouteNotFound,
)
from orderpay.http.bodies import read_body
from orderpay.metrics import metrics
from orderpay.payments.charge import charge_order
from orderpay.payments.refund import ask_for, refund_payment
from orderpay.shapes import order_shape, payment_shape, refund_shape
from orderpay.shop.orders import place_order
from orderpay.store.orders import details_of, get_order_detail

if TYPE_CHECKING:
    from orderpay.config_values import Secret
    from orderpay.runtime import Runtime

REPLAYED_HEADER = "Idempotent-Replayed"
ORDER_FIELDS = ("customer", "items")
ITEM_FIELDS = ("product", "quantity")
CHARGE_FIELDS = ("order", "phone", "provider")
REFUND_FIELDS = ("amount", "currency", "reason")
# Who a refund asked through the API is recorded as: the holder of the one bearer token (the
# server's OS user, or its ORDERPAY_OPERATOR, did not ask for it).
API_OPERATOR = "api"
MAX_FIELDS_NAMED = 10
MAX_FIELD_NAME = 64


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def require_token(secret: Secret | None, given: str | None, refusal: str) -> None:
    """The route does not exist without a configured secret (404); otherwise `given` must
    equal it, compared in constant time (401 with `refusal`)."""
    expected = secret.get_secret_value() if secret is not None else ""
    if not expected:
        raise RouteNotFound("not found")
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise InvalidToken(refusal)


def authorize(request: Request) -> Runtime:
    runtime = _runtime(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else None
    require_token(runtime.settings.api_token, given, "a valid bearer token is required")
    return runtime


async def read_object(request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
    document, _ = json_object(await read_body(request))
    only(document, fields)
    return document


def only(document: dict[str, Any], fields: tuple[str, ...], where: str = "") -> None:
    """Refuse fields the route does not know (400 invalid_field naming them): a misspelt
    field (`payer_phone` for `phone`) must not be silently ignored and its default used."""
    unknown = [name for name in document if name not in fields]
    if unknown:
        # The sender's own names, echoed back: a few, and not too long, whatever it sent.
        shown = [name[:MAX_FIELD_NAME] for name in unknown[:MAX_FIELDS_NAMED]]
        more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
        raise InvalidField(
            f"{where}unknown field{'s' if len(unknown) > 1 else ''} {', '.join(shown)}{more} "
            f"(expected {', '.join(fields)})",
            fields=shown,
        )


def _items(value: Any) -> list[tuple[uuid.UUID, int]]:
    if not isinstance(value, list):
        raise InvalidField("items must be a list of {product, quantity}", field="items")
    items = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise InvalidField("each item must be an object {product, quantity}", field="items")
        only(entry, ITEM_FIELDS, f"items[{index}]: ")
        quantity = entry.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise InvalidQuantity(f"quantity {quantity!r} is not a whole number")
        items.append((parse_uuid(entry.get("product"), "product"), quantity))
    return items


async def create_order(request: Request) -> Response:
    """POST /api/orders/ {"customer": 1, "items": [{"product": "<uuid>", "quantity": 2}]},
    with an optional Idempotency-Key. A replay answers as the first time (201, the order as it
    is now), plus `Idempotent-Replayed: true`.
    """
    runtime = authorize(request)
    raw_key = request.headers.get("idempotency-key")
    key = None if raw_key is None else _key_from_header(raw_key)
    document = await read_object(request, ORDER_FIELDS)
    customer = document.get("customer")
    if isinstance(customer, bool) or not isinstance(customer, int):
        raise InvalidField("customer must be a customer id (an integer)", field="customer")
    items = _items(document.get("items"))

    def create() -> tuple[dict[str, Any], bool]:
        with runtime.database.transaction() as conn:
            placed = place_order(conn, customer_id=customer, items=items, key=key)
            (detail,) = details_of(conn, [placed.order])
            return order_shape(detail), placed.replayed

    shape, replayed = await run_in_threadpool(create)
    headers = {REPLAYED_HEADER: "true"} if replayed else {}
    return JSONResponse(shape, status_code=201, headers=headers)


async def get_order(request: Request) -> Response:
    """GET /api/orders/{id}/"""
    runtime = authorize(request)
    raw = request.path_params["order_id"]
    order_id = as_uuid(raw)
    if order_id is None:
        raise OrderNotFound(f"order {raw} does not exist")

    def load() -> dict[str, Any]:
        with runtime.database.transaction() as conn:
            return order_shape(get_order_detail(conn, order_id))

    return JSONResponse(await run_in_threadpool(load))


async def charge(request: Request) -> Response:
    """POST /api/payments/charge/ {"order": "<uuid>", "phone"?, "provider"?} + Idempotency-Key.

    A replay answers with the first answer's status and the payment as it is now, plus
    `Idempotent-Replayed: true`.
    """
    runtime = authorize(request)
    key = _key_from_header(request.headers.get("idempotency-key"))
    document = await read_object(request, CHARGE_FIELDS)
    order_id = parse_uuid(document.get("order"), "order")
    phone = document.get("phone")
    if phone is not None and not isinstance(phone, str):
        raise InvalidField("phone must be a string", field="phone")
    provider = document.get("provider")
    if provider is not None and provider not in PROVIDER_NAMES:
        known = ", ".join(PROVIDER_NAMES)
        raise InvalidField(f"provider must be one of {known}", field="provider")
    settings = runtime.settings
    try:
        result = await run_in_threadpool(
            charge_order,
            runtime.database,
            runtime.charge_choice(provider),
            order_id=order_id,
            key=key,
            payer_phone=phone,
            default_region=settings.default_region,
            lease_seconds=settings.charge_lease_seconds,
        )
    except Exception as error:
        metrics().charges.labels(getattr(error, "code", "internal_error")).inc()
        raise
    metrics().charges.labels("replayed" if result.replayed else "accepted").inc()
    headers = {REPLAYED_HEADER: "true"} if result.replayed else {}
    return JSONResponse(
        payment_shape(result.payment, replayed=result.replayed), status_code=201, headers=headers
    )


async def refund(request: Request) -> Response:
    """POST /api/payments/{id}/refunds/ {"amount"?: "12.50", "currency"?: "GHS", "reason": "..."}
    + Idempotency-Key. Without `amount`, what remains refundable. 201 with the refund (pending
    or succeeded); a replay answers as the first time, plus `Idempotent-Replayed: true`.
    """
    runtime = authorize(request)
    key = _key_from_header(request.headers.get("idempotency-key"))
    raw = request.path_params["payment_id"]
    payment_id = as_uuid(raw)
    if payment_id is None:
        raise PaymentNotFound(f"payment {raw} does not exist")
    document = await read_object(request, REFUND_FIELDS)
    fields = {name: document.get(name) for name in REFUND_FIELDS}
    for name, value in fields.items():
        # An explicit null is refused, not read as "left out": for `amount` that would refund
        # all that remains, for a client that meant an amount it failed to fill in.
        if (value is not None or name in document) and not isinstance(value, str):
            example = {"amount": '"12.50"', "currency": '"GHS"'}.get(name, "text")
            raise InvalidField(f"{name} must be a string ({example})", field=name)
    if fields["reason"] is None:
        raise InvalidField("reason is required: why the money goes back", field="reason")
    ask = ask_for(
        payment_id,
        key=key,
        amount=fields["amount"],
        currency=fields["currency"],
        reason=fields["reason"],
        operator=API_OPERATOR,
    )
    result = await run_in_threadpool(
        refund_payment,
        runtime.database,
        runtime.provider_for,
        ask,
        lease_seconds=runtime.settings.charge_lease_seconds,
        notify=runtime.notify_target(),
    )
    if result.notification_queued:
        runtime.nudger.nudge()  # coalesced, off the event loop
    headers = {REPLAYED_HEADER: "true"} if result.replayed else {}
    return JSONResponse(
        refund_shape(result.refund, replayed=result.replayed), status_code=201, headers=headers
    )


def _key_from_header(raw: str | None) -> str:
    """The key, accepting the IETF draft's quoted sf-string form ("...") too."""
    if raw is not None and len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        raw = raw[1:-1]
    return check_key(raw)
