"""A worker keeps many sends in flight (notify.delivery.deliver_concurrently, notify.sending):
each row claimed right before its send, recorded as soon as its send ends, at most a channel's
cap in flight, and a gateway's 429 pausing the channel without counting or failing a row.

Real Postgres; the SMS gateway is a local HTTP server that records what it received.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text

from orderpay.domain.states import NotificationStatus
from orderpay.notify.delivery import Batch, Delivery, RetryPolicy
from orderpay.notify.drain import Drain
from orderpay.notify.in_flight import deliver_concurrently
from orderpay.notify.messages import order_reference
from orderpay.notify.sending import ChannelLimits, Sender
from orderpay.store.db import Database
from tests.http_recorder import Answer, Recorded
from tests.redis_helpers import (
    MERCHANT,
    Gateway,
    a_gateway,
    a_settled_payment,
    at_success,
    event_names,
    form_of,
    notification,
    serving,
    shared_gateway_server_fixture,  # noqa: F401
    sms_channel,
    wait_until,
)

POLICY = RetryPolicy((1, 1, 1), lease_seconds=30, send_seconds=5)


def deliver(db: Database, channel: Any, sender: Sender, ids: list[int], **options: Any) -> Batch:
    """The worker's batch of `ids` through `channel` alone (POLICY unless `policy=`)."""
    options.setdefault("policy", POLICY)
    return deliver_concurrently(
        db, serving(channel), sender, ids, merchant_name=MERCHANT, **options
    )


@pytest.fixture
def sender() -> Iterator[Callable[..., Sender]]:
    made: list[Sender] = []

    def make(max_in_flight: int = 100, per_second: float | None = None) -> Sender:
        made.append(Sender(lambda _name: ChannelLimits(max_in_flight, per_second)))
        return made[-1]

    yield make
    for one in made:
        one.close()


@dataclass
class Watched:
    """A gateway's requests as they come: how many were in flight at most, when each came."""

    gateway: Gateway
    hold: float = 0.0  # seconds each answer waits
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    peak: int = 0
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, reference)

    def __call__(self, request: Recorded) -> Answer:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.arrivals.append((time.monotonic(), form_of(request)["message"]))
        try:
            time.sleep(self.hold)
            return self.gateway.respond(request)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def watched() -> Iterator[Watched]:
    with a_gateway() as gateway:
        watching = Watched(gateway)
        gateway.recorder.answer_with(watching)
        yield watching


def references(forms: list[dict[str, str]]) -> Counter[str]:
    return Counter(form["message"].split("order ")[1][:8] for form in forms)


def test_a_worker_keeps_up_to_its_channels_cap_of_sends_in_flight(
    db: Database, watched: Watched, sender: Callable[..., Sender]
) -> None:
    settled = [a_settled_payment(db) for _ in range(12)]
    watched.hold = 0.3
    with closing(sms_channel(watched.gateway)) as channel:
        batch = deliver(db, channel, sender(max_in_flight=4), [s.notification_id for s in settled])

    assert [r.outcome for r in batch.results] == [Delivery.SENT] * 12
    assert watched.peak == 4
    assert references(watched.gateway.sms_forms()) == Counter(
        {order_reference(s.order_id): 1 for s in settled}
    )
    assert {notification(db, s.notification_id).attempts for s in settled} == {1}


def test_a_send_is_recorded_when_it_ends_while_others_are_still_in_flight(
    db: Database, sender: Callable[..., Sender]
) -> None:
    quick, slow = a_settled_payment(db), a_settled_payment(db)
    released = threading.Event()

    with a_gateway() as gateway:

        def answer(request: Recorded) -> Answer:
            if order_reference(slow.order_id) in form_of(request)["message"]:
                released.wait(20)
            return gateway.respond(request)

        gateway.recorder.answer_with(answer)
        with closing(sms_channel(gateway)) as channel:
            delivering = threading.Thread(
                target=deliver_concurrently,
                args=(
                    db,
                    serving(channel),
                    sender(),
                    [quick.notification_id, slow.notification_id],
                ),
                kwargs={"merchant_name": MERCHANT, "policy": POLICY},
            )
            delivering.start()
            try:
                recorded = wait_until(
                    lambda: (
                        notification(db, quick.notification_id).status is NotificationStatus.SENT
                    ),
                    timeout=20,
                    what="the quick send to be recorded",
                )
                slow_meanwhile = notification(db, slow.notification_id).status
            finally:
                released.set()
                delivering.join(30)

    assert recorded
    assert slow_meanwhile is NotificationStatus.PENDING
    assert notification(db, slow.notification_id).status is NotificationStatus.SENT


def test_a_429_pauses_the_channel_and_sends_the_row_again_after_its_retry_after_uncounted(
    db: Database, watched: Watched, sender: Callable[..., Sender]
) -> None:
    settled = a_settled_payment(db)
    watched.gateway.then(Answer(429, b"{}", headers={"Retry-After": "1"}))
    with closing(sms_channel(watched.gateway)) as channel:
        batch = deliver(db, channel, sender(), [settled.notification_id])

    row = notification(db, settled.notification_id)
    assert [r.outcome for r in batch.results] == [Delivery.SENT]
    assert (row.status, row.attempts, row.last_error) == (NotificationStatus.SENT, 1, None)
    (refused_at, _), (sent_at, _) = watched.arrivals
    assert sent_at - refused_at >= 1.0
    assert "notification_attempt_failed" not in event_names(db, settled.order_id)


def test_a_429_on_the_last_try_neither_counts_nor_fails_the_row(
    db: Database, sender: Callable[..., Sender]
) -> None:
    settled = a_settled_payment(db)
    last_try = RetryPolicy((1,), lease_seconds=30, send_seconds=5)  # 2 tries
    with db.transaction() as conn:
        conn.execute(
            text("UPDATE notifications SET attempts = 1 WHERE id = :id"),
            {"id": settled.notification_id},
        )
    with (
        a_gateway(Answer(429, b"{}", headers={"Retry-After": "0.2"})) as gateway,
        closing(sms_channel(gateway)) as channel,
    ):
        batch = deliver(db, channel, sender(), [settled.notification_id], policy=last_try)
        requests = gateway.count()

    row = notification(db, settled.notification_id)
    assert [r.outcome for r in batch.results] == [Delivery.SENT]
    assert (row.status, row.attempts, requests) == (NotificationStatus.SENT, 2, 2)


def test_a_429_pause_longer_than_the_batch_leaves_the_row_pending_and_due_when_it_ends(
    db: Database, sender: Callable[..., Sender]
) -> None:
    settled = a_settled_payment(db)
    with (
        a_gateway(Answer(429, b"{}", headers={"Retry-After": "120"})) as gateway,
        closing(sms_channel(gateway)) as channel,
    ):
        batch = deliver(
            db, channel, sender(), [settled.notification_id], deadline=time.monotonic() + 5
        )
        requests = gateway.count()

    row = notification(db, settled.notification_id)
    (result,) = batch.results
    assert (result.outcome, requests) == (Delivery.SKIPPED, 1)
    assert result.due_in is not None
    assert 100 < result.due_in <= 120
    assert (row.status, row.attempts, row.lease_until) == (NotificationStatus.PENDING, 0, None)
    assert "slow down (HTTP 429, Retry-After 120 s)" in (row.last_error or "")


def test_a_rate_limited_channel_sends_every_row_once(
    db: Database, watched: Watched, sender: Callable[..., Sender]
) -> None:
    settled = [a_settled_payment(db) for _ in range(6)]
    with closing(sms_channel(watched.gateway)) as channel:
        batch = deliver(db, channel, sender(per_second=20.0), [s.notification_id for s in settled])

    assert [r.outcome for r in batch.results] == [Delivery.SENT] * 6
    assert references(watched.gateway.sms_forms()) == Counter(
        {order_reference(s.order_id): 1 for s in settled}
    )


def test_a_channel_whose_rate_runs_out_waits_for_it_and_sends_the_whole_batch(
    db: Database, watched: Watched, sender: Callable[..., Sender]
) -> None:
    settled = [a_settled_payment(db) for _ in range(4)]
    with closing(sms_channel(watched.gateway)) as channel:
        batch = deliver_concurrently(
            db,
            serving(channel),
            sender(per_second=4.0),  # four at once, then one each 0.25 s
            [s.notification_id for s in settled] + [a_settled_payment(db).notification_id],
            merchant_name=MERCHANT,
            policy=POLICY,
        )

    assert [r.outcome for r in batch.results] == [Delivery.SENT] * 5
    (*_, (fifth_at, _)) = sorted(watched.arrivals)
    assert fifth_at - min(at for at, _ in watched.arrivals) >= 0.2


def test_a_gateway_that_refuses_one_message_fails_only_that_row(
    db: Database, sender: Callable[..., Sender]
) -> None:
    refused, accepted = a_settled_payment(db), a_settled_payment(db)

    with a_gateway() as gateway:

        def answer(request: Recorded) -> Answer:
            if order_reference(refused.order_id) in form_of(request)["message"]:
                return Answer(400, b"bad number")
            return at_success("ATXid_ok")

        gateway.recorder.answer_with(answer)
        with closing(sms_channel(gateway)) as channel:
            batch = deliver(
                db, channel, sender(), [refused.notification_id, accepted.notification_id]
            )

    outcomes = {r.notification_id: r.outcome for r in batch.results}
    assert outcomes == {
        refused.notification_id: Delivery.FAILED,
        accepted.notification_id: Delivery.SENT,
    }
    assert notification(db, accepted.notification_id).gateway_message_id == "ATXid_ok"


def test_stopping_ends_the_claims_and_records_the_sends_in_flight(
    db: Database, watched: Watched, sender: Callable[..., Sender]
) -> None:
    settled = [a_settled_payment(db) for _ in range(6)]
    watched.hold = 0.5
    stop = threading.Event()
    with closing(sms_channel(watched.gateway)) as channel:
        results: list[Any] = []
        delivering = threading.Thread(
            target=lambda: results.append(
                deliver(
                    db,
                    channel,
                    sender(max_in_flight=2),
                    [s.notification_id for s in settled],
                    stop=stop.is_set,
                )
            )
        )
        delivering.start()
        wait_until(lambda: watched.in_flight == 2, timeout=20, what="two sends in flight")
        stop.set()
        delivering.join(30)

    (batch,) = results
    sent = [r.notification_id for r in batch.results if r.outcome is Delivery.SENT]
    assert len(sent) == len(watched.arrivals)
    assert sorted(sent + batch.left) == sorted(s.notification_id for s in settled)
    for nid in batch.left:
        row = notification(db, nid)
        assert (row.status, row.attempts, row.lease_until) == (NotificationStatus.PENDING, 0, None)


def test_the_embedded_worker_keeps_up_to_the_cap_of_sends_in_flight_from_the_database(
    any_db: Database, watched: Watched, sender: Callable[..., Sender]
) -> None:
    settled = [a_settled_payment(any_db) for _ in range(7)]
    watched.hold = 0.3
    with closing(sms_channel(watched.gateway)) as channel:
        results = Drain(
            any_db, serving(channel), POLICY, MERCHANT, sender(max_in_flight=3)
        ).drain_due()

    assert [r.outcome for r in results] == [Delivery.SENT] * 7
    assert watched.peak == 3
    assert references(watched.gateway.sms_forms()) == Counter(
        {order_reference(s.order_id): 1 for s in settled}
    )


class NeverAnswering(Sender):
    """A sender whose event loop died: the sends it takes never end."""

    def submit(self, *_args: Any) -> concurrent.futures.Future[str]:
        return concurrent.futures.Future()


def test_sends_whose_loop_is_gone_leave_their_rows_to_their_leases_and_the_batch_ends(
    db: Database, watched: Watched
) -> None:
    settled = [a_settled_payment(db) for _ in range(2)]
    gone = NeverAnswering(lambda _name: ChannelLimits(2))
    short = RetryPolicy((1,), lease_seconds=30, send_seconds=1)
    results: list[Any] = []
    with closing(sms_channel(watched.gateway)) as channel:
        delivering = threading.Thread(
            target=lambda: results.append(
                deliver(db, channel, gone, [s.notification_id for s in settled], policy=short)
            )
        )
        delivering.start()
        delivering.join(30)

    assert not delivering.is_alive()
    assert [r.outcome for r in results[0].results] == [Delivery.SKIPPED] * 2
    for s in settled:
        row = notification(db, s.notification_id)
        assert (row.status, row.attempts) == (NotificationStatus.PENDING, 1)
        assert row.lease_until is not None


def test_closing_the_sender_mid_send_ends_the_send_as_a_failed_try_due_again(
    db: Database, watched: Watched
) -> None:
    settled = a_settled_payment(db)
    watched.hold = 5.0
    closing_sender = Sender(lambda _name: ChannelLimits(2))
    results: list[Any] = []
    with closing(sms_channel(watched.gateway)) as channel:
        delivering = threading.Thread(
            target=lambda: results.append(
                deliver(db, channel, closing_sender, [settled.notification_id])
            )
        )
        delivering.start()
        wait_until(lambda: watched.in_flight == 1, timeout=20, what="the send in flight")
        closing_sender.close()
        delivering.join(30)

    row = notification(db, settled.notification_id)
    assert [r.outcome for r in results[0].results] == [Delivery.RETRY]
    assert (row.status, row.attempts, row.lease_until) == (NotificationStatus.PENDING, 1, None)
