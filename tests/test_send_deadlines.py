"""Sends that end before their lease: a whole-request deadline, a message that went out recorded
whoever holds the row, and a row that stops at its last try whatever ended it.

The gateway is a local server: one that drips its answer a byte at a time (each read is quick,
the whole answer is not), or the recording gateway of the other notification tests.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from orderpay import clock
from orderpay.clock import utcnow
from orderpay.domain.states import NotificationStatus
from orderpay.notify.delivery import Delivery, RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.notify.in_flight import deliver_batch
from orderpay.store import outbox
from orderpay.store.db import Database
from orderpay.store.notification_attempts import Outcome, Recorded
from tests import http_recorder
from tests.redis_helpers import (
    LOG_TARGET,
    MERCHANT,
    a_gateway,
    a_settled_payment,
    event_names,
    notification,
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
)
from tests.tcp_proxy import cuttable_proxy

_SENT = (
    b'{"SMSMessageData": {"Recipients": [{"statusCode": 101, "status": "Success", '
    b'"messageId": "ATXid_drip"}]}}'
)
ANSWER = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_SENT)}\r\n\r\n".encode()
    + _SENT
)


class DrippingGateway:
    """Takes each request, then sends its answer one byte every `every` seconds: no read
    waits long, the whole answer takes len(ANSWER) * every."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.requests = 0
        self.stopped = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed at the end of the test
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                if not conn.recv(65536):
                    return
                self.requests += 1
                for byte in ANSWER:
                    if self.stopped.wait(self.every):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up: what a deadline does


@contextmanager
def a_dripping_gateway(every: float) -> Iterator[DrippingGateway]:
    gateway = DrippingGateway(every)
    gateway._thread.start()
    try:
        yield gateway
    finally:
        gateway.stopped.set()
        gateway._server.close()


@pytest.mark.slow
def test_a_gateway_that_drips_its_answer_is_cut_off_before_the_lease_and_gets_one_request(
    db: Database,
) -> None:
    # Each byte comes well within the channel's 1 s timeout; the whole answer takes 6 s, past
    # the 2 s lease. A second worker claims whatever is due while the first one sends.
    row = a_settled_payment(db).notification_id
    policy = RetryPolicy((60,), lease_seconds=2, send_seconds=1)
    with a_dripping_gateway(every=0.05) as gateway:
        channel = sms_channel(gateway, timeout=1)
        first = Drain(db, serving(channel), policy, MERCHANT)
        second = Drain(db, serving(channel), policy, MERCHANT)
        sending = threading.Thread(target=first.drain_one)
        started = time.monotonic()
        sending.start()
        while sending.is_alive():
            second.drain_one()
            sending.join(0.1)
        took = time.monotonic() - started
        requests = gateway.requests

    after = notification(db, row)
    assert requests == 1
    assert took < policy.lease_seconds
    assert (after.status, after.attempts) == (NotificationStatus.PENDING, 1)
    assert after.last_error == "the gateway did not answer in time"


def test_a_name_that_takes_too_long_to_look_up_ends_the_send_by_its_deadline(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = a_settled_payment(db).notification_id
    released = threading.Event()

    def a_name_server_that_does_not_answer(*args: object, **kwargs: object) -> list[object]:
        released.wait(10)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(socket, "getaddrinfo", a_name_server_that_does_not_answer)
    policy = RetryPolicy((60,), lease_seconds=2, send_seconds=1)

    class Named:
        url = "http://sms-gateway.example"

    channel = sms_channel(Named(), timeout=1)
    started = time.monotonic()
    try:
        result = Drain(db, serving(channel), policy, MERCHANT).drain_one()
    finally:
        released.set()
    took = time.monotonic() - started

    assert result is not None
    assert result.outcome is Delivery.RETRY
    assert took < policy.lease_seconds
    assert notification(db, row).attempts == 1


def test_a_message_sent_after_another_attempt_took_the_row_over_is_recorded_as_sent(
    any_db: Database,
) -> None:
    row = a_settled_payment(any_db, target=LOG_TARGET).notification_id
    lease = timedelta(seconds=30)
    with any_db.transaction() as conn:
        (slow,) = outbox.claim_among(conn, [row], 1, lease, utcnow())
    clock.advance(lease + timedelta(seconds=1))  # the slow send outlasts its lease
    with any_db.transaction() as conn:
        (taken_over,) = outbox.claim_among(conn, [row], 1, lease, utcnow())
    went_out = Recorded(slow, Outcome.SENT, body="Hi", message_id="log-slow")
    failed_try = Recorded(
        taken_over, Outcome.RETRY, error="timeout", due_at=utcnow() + lease, retry_in=30
    )

    with any_db.transaction() as conn:
        written = outbox.record_outcomes(conn, [went_out])
    with any_db.transaction() as conn:
        rewritten = outbox.record_outcomes(conn, [failed_try])

    after = notification(any_db, row)
    assert (written, rewritten) == ({row}, set())
    assert (after.status, after.gateway_message_id) == (NotificationStatus.SENT, "log-slow")
    assert event_names(any_db, after.order_id).count("notification_sent") == 1


def test_a_row_whose_last_try_outlasted_its_lease_is_failed_not_sent_again(db: Database) -> None:
    row = a_settled_payment(db).notification_id
    policy = RetryPolicy((1,), lease_seconds=30, send_seconds=5)  # two tries at most
    lease = timedelta(seconds=policy.lease_seconds)
    with db.transaction() as conn:
        outbox.claim_among(conn, [row], 1, lease, utcnow(), policy.max_attempts)
    clock.advance(lease + timedelta(seconds=1))  # the first try's worker died mid-send
    with db.transaction() as conn:
        outbox.claim_among(conn, [row], 1, lease, utcnow(), policy.max_attempts)
    clock.advance(lease + timedelta(seconds=1))  # and so did the last try's
    with a_gateway() as gateway:
        batch = deliver_batch(
            db, serving(sms_channel(gateway)), [row], merchant_name=MERCHANT, policy=policy
        )

        requests = gateway.count()
    after = notification(db, row)
    assert requests == 0
    assert [r.outcome for r in batch.results] == [Delivery.SKIPPED]
    assert (after.status, after.attempts) == (NotificationStatus.FAILED, 2)
    assert "ended without an outcome" in (after.last_error or "")
    assert event_names(db, after.order_id).count("notification_failed") == 1


def test_the_embedded_drain_fails_a_row_whose_last_try_outlasted_its_lease(db: Database) -> None:
    row = a_settled_payment(db).notification_id
    policy = RetryPolicy((), lease_seconds=30, send_seconds=5)  # one try
    lease = timedelta(seconds=policy.lease_seconds)
    with db.transaction() as conn:
        outbox.claim_next_due(conn, lease, utcnow(), policy.max_attempts)
    clock.advance(lease + timedelta(seconds=1))
    with a_gateway() as gateway:
        result = Drain(db, serving(sms_channel(gateway)), policy, MERCHANT).drain_one()

        requests = gateway.count()
    after = notification(db, row)
    assert result is None
    assert requests == 0
    assert (after.status, after.attempts) == (NotificationStatus.FAILED, 1)


def test_a_message_sent_while_the_database_restarts_is_recorded_once_it_is_back(
    db: Database,
) -> None:
    row = a_settled_payment(db).notification_id
    policy = RetryPolicy((60,), lease_seconds=20, send_seconds=5)
    url = make_url(db.url)
    with cuttable_proxy(url.port or 5432) as proxy, a_gateway() as gateway:
        through = Database(url.set(host="127.0.0.1", port=proxy.port))
        back = threading.Timer(1.0, proxy.restore)

        def restart_while_taking_the_message(
            request: http_recorder.Recorded,
        ) -> http_recorder.Answer:
            proxy.cut()  # the database restarts while the gateway takes the message
            back.start()
            return gateway.respond(request)

        gateway.recorder.answer_with(restart_while_taking_the_message)
        try:
            result = Drain(through, serving(sms_channel(gateway)), policy, MERCHANT).drain_one()
        finally:
            back.join()
            through.engine.dispose()
        requests = gateway.count()

    after = notification(db, row)
    assert result is not None
    assert result.outcome is Delivery.SENT
    assert requests == 1
    assert (after.status, after.attempts) == (NotificationStatus.SENT, 1)
