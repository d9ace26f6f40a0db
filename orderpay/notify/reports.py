"""SMS delivery reports (Africa's Talking DLRs): `sent` -> `delivered` | `undelivered`.

Applied once per (message id, status): a repeated report changes nothing, and the first final
report wins. Interim statuses (Sent, Submitted, Buffered) keep the notification `sent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sqlalchemy import Connection

from orderpay.domain.states import NotificationStatus
from orderpay.domain.validation import has_unstorable_characters, json_object
from orderpay.errors import InvalidPayload, NotificationNotFound
from orderpay.store.notifications import by_gateway_message
from orderpay.store.outbox import record_delivery
from orderpay.store.webhook_events import record_once

DLR_SOURCE = "sms-dlr"
FINAL_STATUSES = {
    "Success": NotificationStatus.DELIVERED,
    "Failed": NotificationStatus.UNDELIVERED,
    "Rejected": NotificationStatus.UNDELIVERED,
}
MAX_FIELD_LENGTH = 128


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    message_id: str
    status: str
    failure_reason: str | None
    payload: str


def parse_report(body: bytes, content_type: str) -> DeliveryReport:
    """AT posts a form; JSON with the same fields is accepted too."""
    fields: Mapping[str, object]
    if content_type.startswith("application/json"):
        fields, text = json_object(body)
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPayload("the body is not UTF-8") from None
        if "\x00" in text:
            raise InvalidPayload("the body contains NUL characters")
        fields = dict(parse_qsl(text, keep_blank_values=True))
    message_id = _field(fields, "id", required=True)
    status = _field(fields, "status", required=True)
    reason = _field(fields, "failureReason", required=False)
    assert message_id is not None
    assert status is not None
    return DeliveryReport(message_id, status, reason, text)


def _field(fields: Mapping[str, object], name: str, *, required: bool) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise InvalidPayload(f"{name} is required")
        return None
    if (
        not isinstance(value, str)
        or len(value) > MAX_FIELD_LENGTH
        or has_unstorable_characters(value)
    ):
        raise InvalidPayload(
            f"{name} must be a string of at most {MAX_FIELD_LENGTH} printable characters"
        )
    return value


def apply_report(conn: Connection, report: DeliveryReport) -> str:
    """Apply a report in the caller's transaction; returns what happened (for the answer).

    Raises NotificationNotFound (404, the gateway retries) for a message id we do not know yet.
    """
    found = by_gateway_message(conn, report.message_id)
    if found is None:
        raise NotificationNotFound(f"no notification was sent as message {report.message_id}")
    notification_id, order_id, status = found
    target = FINAL_STATUSES.get(report.status)
    applies = target is not None and status == NotificationStatus.SENT.value
    recorded = record_once(
        conn,
        source=DLR_SOURCE,
        dedupe_key=f"{report.message_id}:{report.status}",
        payload=report.payload,
        order_id=order_id,
        outcome=target.value if applies and target is not None else "kept",
    )
    if not recorded:
        return "duplicate"
    if not applies or target is None:
        return "kept"  # an interim status, or a final report was applied already
    detail = f"notification {notification_id}: {report.status}"
    if report.failure_reason:
        detail += f" ({report.failure_reason})"
    moved = record_delivery(
        conn,
        notification_id,
        order_id,
        target,
        failure_reason=report.failure_reason,
        detail=detail,
    )
    return target.value if moved else "kept"
