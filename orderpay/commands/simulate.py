"""`orderpay webhook simulate`'s callbacks: the seed's signed momo callback, and Daraja's STK
callback for an M-Pesa payment (reference/providers.md, "Callback"); commands/webhooks.py
parses the command line."""

from __future__ import annotations

from typing import Any

import typer

from orderpay.commands.common import emit_json, runtime

# M-Pesa's answer to a prompt the payer dismissed (reference/providers.md, result codes).
MPESA_CANCELLED = (1032, "Request cancelled by user")
MPESA_PAID = (0, "The service request is processed successfully.")


def simulate_momo(
    ctx: typer.Context,
    order_id: str,
    status: str,
    url: str,
    reason: str | None,
    key: bytes,
    json_: bool,
) -> None:
    """The seed's signed callback for an order's latest payment (the simulator's), to `url`."""
    import json

    from orderpay.commands.common import order_id as resolve_order
    from orderpay.domain.signatures import sign_hex
    from orderpay.errors import PaymentNotFound, WrongProvider
    from orderpay.payments.callbacks import SIGNING_PROVIDERS
    from orderpay.store.payments import payments_of

    with runtime(ctx).database.transaction() as conn:
        oid = resolve_order(conn, order_id)
        found = payments_of(conn, [oid])
    if not found:
        raise PaymentNotFound(f"order {oid} has no payment to settle; charge it first")
    payment = found[-1]
    if payment.provider not in SIGNING_PROVIDERS:
        hint = (
            "; `--provider mpesa` sends Daraja's callback instead, which the listener confirms "
            "with STK Query"
            if payment.provider == "mpesa"
            else ""
        )
        raise WrongProvider(
            f"payment {payment.id} is {payment.provider}'s: only {payment.provider}'s own "
            "word settles it (its status call: `orderpay reconcile`), never a simulated callback"
            + hint,
            payment=str(payment.id),
        )
    document = {
        "provider_reference": payment.provider_reference or str(payment.id),
        "order_id": str(oid),
        "status": status,
        "amount": payment.amount.as_string(),
        "currency": payment.amount.currency,
    }
    if reason:
        document["reason"] = reason
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json", "X-Momo-Signature": sign_hex(body, key)}
    _post(url, url, body, headers, document, json_)


def simulate_mpesa(ctx: typer.Context, target: str, status: str, url: str, json_: bool) -> None:
    """Daraja's STK callback for an M-Pesa payment, to the listener at `url`'s host, on the
    path /api/webhooks/daraja/MPESA_CALLBACK_TOKEN/ with our reference as `ref`."""
    import json

    from orderpay.errors import ConfigurationError, PaymentUnconfirmed, WrongProvider
    from orderpay.payments.callbacks import SIGNING_PROVIDERS
    from orderpay.providers.mpesa_config import plain, with_reference

    rt = runtime(ctx)
    token = (plain(rt.settings.mpesa_callback_token) or "").strip()
    if not token:
        raise ConfigurationError(
            "MPESA_CALLBACK_TOKEN is not set: the listener's M-Pesa route is the path "
            "/api/webhooks/daraja/MPESA_CALLBACK_TOKEN/; set it as the listener has it"
        )
    with rt.database.transaction() as conn:
        payment = _mpesa_payment(conn, target)
    if payment.provider != "mpesa":
        raise WrongProvider(
            f"payment {payment.id} is {payment.provider}'s, not M-Pesa's: --provider mpesa "
            "simulates M-Pesa's callbacks only"
            + (
                " (without --provider, a signed momo callback for its order)"
                if payment.provider in SIGNING_PROVIDERS
                else ""
            ),
            payment=str(payment.id),
        )
    if not payment.provider_reference:
        raise PaymentUnconfirmed(
            f"payment {payment.id}'s STK push answer was lost, so its CheckoutRequestID is "
            "not known and a simulated callback cannot name it: M-Pesa's own callback (found "
            "by our reference), the catch-up or the review queue settles it",
            payment=str(payment.id),
        )
    document = mpesa_stk_callback(
        payment.provider_reference,
        payment_id=str(payment.id),
        succeeded=status == "success",
        whole_amount=_whole_shillings(payment.amount),
        payer=payment.payer_phone,
    )
    path = f"/api/webhooks/daraja/{token}/"
    target_url = _on_listener(url, path)
    shown_url = _on_listener(url, "/api/webhooks/daraja/***/")
    if payment.our_reference:
        target_url = with_reference(target_url, "ref", payment.our_reference)
        shown_url = with_reference(shown_url, "ref", payment.our_reference)
    body = json.dumps(document).encode()
    _post(target_url, shown_url, body, {"Content-Type": "application/json"}, document, json_)


def _mpesa_payment(conn: Any, target: str) -> Any:
    """The payment `target` names, or the latest payment of the order it names."""
    from orderpay.commands.common import order_id, payment_id
    from orderpay.errors import OrderNotFound, PaymentNotFound
    from orderpay.store.payments import get_payment, payments_of

    try:
        return get_payment(conn, payment_id(conn, target))
    except PaymentNotFound:
        pass
    try:
        oid = order_id(conn, target)
    except OrderNotFound:
        raise PaymentNotFound(f"no payment (or order) has id {target}") from None
    found = payments_of(conn, [oid])
    if not found:
        raise PaymentNotFound(f"order {oid} has no payment to settle; charge it first")
    return found[-1]


def mpesa_stk_callback(
    checkout_id: str, *, payment_id: str, succeeded: bool, whole_amount: int, payer: str
) -> dict[str, Any]:
    """Daraja's STK callback body for a payment (reference/providers.md, "Callback"): the
    metadata only on success. The ids M-Pesa makes up are derived from the payment, so a
    repeated simulation is a copy of the same result."""
    import hashlib

    from orderpay.domain.phones import msisdn
    from orderpay.providers.mpesa_api import kenya_timestamp

    digest = hashlib.sha256(payment_id.encode()).hexdigest().upper()
    code, description = MPESA_PAID if succeeded else MPESA_CANCELLED
    callback: dict[str, Any] = {
        "MerchantRequestID": f"{int(digest[:4], 16)}-{int(digest[4:10], 16)}-1",
        "CheckoutRequestID": checkout_id,
        "ResultCode": code,
        "ResultDesc": description,
    }
    if succeeded:
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": float(whole_amount)},
                {"Name": "MpesaReceiptNumber", "Value": simulated_receipt(payment_id)},
                {"Name": "TransactionDate", "Value": int(kenya_timestamp())},
                {"Name": "PhoneNumber", "Value": int(msisdn(payer))},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def simulated_receipt(payment_id: str) -> str:
    """A made-up M-Pesa receipt (10 capitals and digits, as M-Pesa's are), the same for a
    payment each time; `SIM` says where it came from."""
    import hashlib

    return "SIM" + hashlib.sha256(payment_id.encode()).hexdigest()[:7].upper()


def _whole_shillings(amount: Any) -> int:
    from orderpay.domain.money import exponent

    whole, fraction = divmod(amount.minor_units, 10 ** exponent(amount.currency))
    if fraction:  # refused before the push (Capabilities.check_amount)
        from orderpay.errors import InvalidAmount

        raise InvalidAmount(f"M-Pesa takes whole amounts only; this payment is {amount}")
    return int(whole)


def _on_listener(url: str, path: str) -> str:
    """`url`'s scheme and host with `path` in place of its /api/webhooks/... route (a prefix
    before it, such as a reverse proxy's, is kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    prefix = parts.path.split("/api/webhooks/", 1)[0].rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, prefix + path, "", ""))


def _post(
    url: str,
    shown_url: str,
    body: bytes,
    headers: dict[str, str],
    document: dict[str, Any],
    json_: bool,
) -> None:
    """POST the callback; print the listener's answer; raise its error when not 2xx.
    `shown_url` is what messages name (a path token masked)."""
    import json

    import httpx

    from orderpay.errors import InvalidField, Unavailable, error_for_status

    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=10)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        raise InvalidField(
            f"--url {shown_url!r} is not a listener's URL: {error}", field="url"
        ) from None
    except httpx.HTTPError as error:
        raise Unavailable(f"cannot reach the listener at {shown_url}: {error}") from None
    try:
        answer_body = answer.json()
    except ValueError:
        answer_body = answer.text
    if json_:
        shown: dict[str, Any] = {
            "status_code": answer.status_code,
            "body": answer_body,
            "sent": document,
        }
        if shown_url != url:
            shown["url"] = shown_url
        emit_json(shown)
    else:
        typer.echo(f"HTTP {answer.status_code} {json.dumps(answer_body, ensure_ascii=False)}")
    if answer.status_code >= 300:
        raise error_for_status(answer.status_code, f"the listener answered {answer.status_code}")
