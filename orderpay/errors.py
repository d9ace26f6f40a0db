"""The one error hierarchy.

Concrete errors subclass exactly one category; only the categories carry the HTTP status and
the CLI exit code (DESIGN.md section 7), so adding an error never means editing a mapping. The
two translation points are the Starlette exception handlers (server.py) and the CLI's root
group (cli.py).
"""

from __future__ import annotations

from typing import Any, ClassVar


class OrderpayError(Exception):
    """Base of every error a user can cause or meet. Never raised directly."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, public_message: str | None = None, **details: Any) -> None:
        super().__init__(message)
        # For the operator (CLI, logs): may name the database, its host or a file path.
        self.message = message
        # For outside callers (HTTP answers), which must never learn hosts, users or paths.
        self.public_message = public_message or message
        # Extra, JSON-serialisable context (ids, the stored payment...), never secrets.
        self.details = details

    def to_dict(self, *, public: bool = False) -> dict[str, Any]:
        message = self.public_message if public else self.message
        body: dict[str, Any] = {"code": self.code, "message": message}
        body.update(self.details)
        return {"error": body}


# Categories: one per row of DESIGN.md section 7.


class InvalidInput(OrderpayError):
    http_status = 400
    exit_code = 2
    code = "invalid_input"


class Unauthenticated(OrderpayError):
    http_status = 401
    exit_code = 2
    code = "unauthenticated"


class Forbidden(OrderpayError):
    """Who is asking may not do this (a caller outside an allow-list; an operator's role)."""

    http_status = 403
    exit_code = 2
    code = "forbidden"


class NotFound(OrderpayError):
    http_status = 404
    exit_code = 3
    code = "not_found"


class Conflict(OrderpayError):
    http_status = 409
    exit_code = 4
    code = "conflict"


class PayloadTooLarge(OrderpayError):
    http_status = 413
    exit_code = 2
    code = "payload_too_large"


class IdempotencyKeyReused(OrderpayError):
    http_status = 422
    exit_code = 5
    code = "idempotency_key_reused"


class PaymentDeclined(OrderpayError):
    http_status = 402
    exit_code = 6
    code = "payment_declined"


class RefundDeclined(PaymentDeclined):
    """The provider refused to send a refund (a definite answer: the refund is `failed`)."""

    code = "refund_declined"


class Unavailable(OrderpayError):
    http_status = 503
    exit_code = 7
    code = "unavailable"


CATEGORIES: tuple[type[OrderpayError], ...] = (
    InvalidInput,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    IdempotencyKeyReused,
    PaymentDeclined,
    Unavailable,
)


# Invalid input (400, exit 2)


class InvalidPhone(InvalidInput):
    code = "invalid_phone"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class UnknownCurrency(InvalidInput):
    code = "unknown_currency"


class CurrencyMismatch(InvalidInput):
    code = "currency_mismatch"


class InvalidQuantity(InvalidInput):
    code = "invalid_quantity"


class InvalidField(InvalidInput):
    """A field that is missing, malformed or out of range (names, ids, emails, bodies)."""

    code = "invalid_field"


class IdempotencyKeyMissing(InvalidInput):
    code = "idempotency_key_missing"


class InvalidIdempotencyKey(InvalidInput):
    code = "invalid_idempotency_key"


class InvalidPayload(InvalidInput):
    code = "invalid_payload"


class UsageError(InvalidInput):
    """A command line the parser refused (missing option, bad value); Click words it."""

    code = "usage_error"


class ConfigurationError(InvalidInput):
    code = "configuration_error"


class RefundNotSupported(InvalidInput):
    """The payment's provider cannot give back what is asked (its refund mode)."""

    code = "refund_not_supported"


class DatabaseInaccessible(InvalidInput):
    """The database's file or directory is missing, read-only or unwritable: retrying never
    helps, so this is not an outage."""

    code = "database_inaccessible"


class DatabaseNotEmpty(InvalidInput):
    """`orderpay demo --database-url` names a database that already holds orderpay data."""

    code = "database_not_empty"


class AmbiguousId(InvalidInput):
    """A short id that the start of several ids matches."""

    code = "ambiguous_id"


class EventNotReplayable(InvalidInput):
    """A webhook event of a source that `orderpay webhook replay` cannot run again."""

    code = "event_not_replayable"


class ConfirmationRequired(InvalidInput):
    """A command that asks before it acts got no terminal to ask on, and no --yes."""

    code = "confirmation_required"


class GatewayRejected(InvalidInput):
    """The SMS gateway or merchant endpoint refused a message for good (no retry helps)."""

    code = "gateway_rejected"


# Authentication (401)


class InvalidSignature(Unauthenticated):
    code = "invalid_signature"


class InvalidToken(Unauthenticated):
    code = "invalid_token"


# Not found (404, exit 3)


class OrderNotFound(NotFound):
    code = "order_not_found"


class CustomerNotFound(NotFound):
    code = "customer_not_found"


class ProductNotFound(NotFound):
    code = "product_not_found"


class PaymentNotFound(NotFound):
    code = "payment_not_found"


class NotificationNotFound(NotFound):
    code = "notification_not_found"


class WebhookEventNotFound(NotFound):
    """No webhook event (webhook_events row) has this id."""

    code = "webhook_event_not_found"


class RefundNotFound(NotFound):
    code = "refund_not_found"


class ReviewItemNotFound(NotFound):
    code = "review_item_not_found"


class RouteNotFound(NotFound):
    code = "not_found"


# Conflict (409, exit 4)


class PaymentInProgress(Conflict):
    code = "payment_in_progress"


class OrderAlreadyPaid(Conflict):
    code = "order_already_paid"


class OrderCancelled(Conflict):
    code = "order_cancelled"


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class ConcurrentUpdate(Conflict):
    code = "concurrent_update"


class CustomerExists(Conflict):
    """A customer with this phone exists already (creating another needs --allow-duplicate)."""

    code = "customer_exists"


class ProductInactive(Conflict):
    code = "product_inactive"


class NotificationNotRetryable(Conflict):
    code = "notification_not_retryable"


class PaymentAlreadySettled(Conflict):
    """An operator asked to cancel a payment that already has its outcome."""

    code = "payment_already_settled"


class PaymentPendingAtProvider(Conflict):
    """The provider still has the payment pending: the payer may yet approve it."""

    code = "payment_pending_at_provider"


class WrongProvider(Conflict):
    """The payment belongs to another provider than the one the command acts for."""

    code = "wrong_provider"


class PaymentNotRefundable(Conflict):
    """Only a succeeded payment gives money back."""

    code = "payment_not_refundable"


class RefundExceedsPayment(Conflict):
    """The refunds of a payment that did not fail would add up to more than it."""

    code = "refund_exceeds_payment"


class PaymentUnconfirmed(Conflict):
    """The request went to a provider that cannot take it twice and its answer was lost: it is
    not sent again (the payer would be prompted twice); its outcome is awaited."""

    code = "payment_unconfirmed"


class RefundUnconfirmed(Conflict):
    """As PaymentUnconfirmed, for a refund: sending it again could pay it out twice."""

    code = "refund_unconfirmed"


class ReviewItemResolved(Conflict):
    code = "review_item_resolved"


# Body too large (413)


class BodyTooLarge(PayloadTooLarge):
    code = "payload_too_large"


# Unavailable (503, exit 7)


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"


class SchemaOutOfDate(Unavailable):
    code = "schema_out_of_date"


class ProviderUnavailable(Unavailable):
    """The provider's answer is unknown. `reached`: whether the request may have arrived
    (False only when it certainly did not: no connection, no token, a refusal before acting),
    which decides whether a provider that cannot take a request twice is sent it again."""

    code = "provider_unavailable"

    def __init__(self, message: str, *, reached: bool = True, **details: Any) -> None:
        super().__init__(message, **details)  # public_message among them, when given
        self.reached = reached


class ProviderBusy(ProviderUnavailable):
    """The provider refused the request without acting on it, for now (M-Pesa: the payer has a
    prompt open, or was asked the same amount within 2 minutes): retry after `retry_after`."""

    code = "provider_busy"

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, reached=False, retry_after=retry_after, **details)
        self.retry_after = retry_after


class QueueUnavailable(Unavailable):
    code = "queue_unavailable"


class GatewayUnavailable(Unavailable):
    """The SMS gateway or merchant endpoint failed in a way a later try may not."""

    code = "gateway_unavailable"


class GatewayThrottled(GatewayUnavailable):
    """The gateway asked the sender to slow down (HTTP 429): the message was not taken, and
    the channel pauses for `retry_after` seconds (its Retry-After) or its own backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def category_of(error_class: type[OrderpayError]) -> type[OrderpayError]:
    """The one category an error belongs to (tests check there is exactly one)."""
    found = [c for c in CATEGORIES if issubclass(error_class, c)]
    if len(found) != 1:
        raise TypeError(f"{error_class.__name__} belongs to {len(found)} categories")
    return found[0]


def error_for_status(status: int, message: str) -> OrderpayError:
    """An error of the category a remote orderpay answered with (for its exit code): its own
    category's, else a refusal of the request (4xx: exit 2) or an outage (5xx: exit 7)."""
    for category in CATEGORIES:
        if category.http_status == status:
            return category(message)
    return Unavailable(message) if status >= 500 else InvalidInput(message)
