"""SMS delivery reports (Africa's Talking DLRs): `sent` -> `delivered` | `undelivered`.

Applied once per (message id, status): a repeated report changes nothing, and the first final
report wins. Interim statuses (Sent, Submitted, Buffered) keep the notification `sent`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sqlalchemy import Connection, select, update

from orderpay.clock import utcnow
from orderpay.errors import InvalidPayload, NotificationNotFound
from orderpay.fields import has_unstorable_characters
from orderpay.inbox import record_once
from orderpay.models import notifications
from orderpay.states import NotificationStatus
from orderpay.timeline import record_event

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
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("the body is not UTF-8") from None
    if "\x00" in text:
        raise InvalidPayload("the body contains NUL characters")
    fields: Mapping[str, object]
    if content_type.startswith("application/json"):
        try:
            document = json.loads(text)
        except ValueError:
            raise InvalidPayload("the body is not valid JSON") from None
        if not isinstance(document, dict):
            raise InvalidPayload("the body must be a JSON object")
        fields = document
    else:
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
    row = conn.execute(
        select(notifications.c.id, notifications.c.order_id, notifications.c.status)
        .where(notifications.c.gateway_message_id == report.message_id)
        .with_for_update()
    ).first()
    if row is None:
        raise NotificationNotFound(f"no notification was sent as message {report.message_id}")
    notification_id, order_id, status = row
    target = FINAL_STATUSES.get(report.status)
    applies = target is not None and status == NotificationStatus.SENT.value
    now = utcnow()
    recorded = record_once(
        conn, source=DLR_SOURCE, dedupe_key=f"{report.message_id}:{report.status}",
        payload=report.payload, order_id=order_id,
        outcome=target.value if applies and target is not None else "kept",
    )  # fmt: skip
    if not recorded:
        return "duplicate"
    if not applies or target is None:
        return "kept"  # an interim status, or a final report was applied already
    conn.execute(
        update(notifications)
        .where(
            notifications.c.id == notification_id,
            notifications.c.status == NotificationStatus.SENT.value,
        )
        .values(
            status=target.value,
            last_error=report.failure_reason if target is NotificationStatus.UNDELIVERED else None,
            updated_at=now,
        )
    )
    detail = f"notification {notification_id}: {report.status}"
    if report.failure_reason:
        detail += f" ({report.failure_reason})"
    record_event(conn, order_id, f"notification_{target.value}", detail, at=now)
    return target.value
