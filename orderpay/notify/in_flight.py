"""A batch with many sends in flight: what a worker with a Sender (notify.sending) runs.

The rules are delivery's (claim right before the send, the row's own channel, record what
became of it, leases and deadlines); only the pace differs: a channel's sends go out together,
up to its cap and rate, and each is recorded as soon as it ends.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from orderpay.clock import utcnow
from orderpay.errors import GatewayThrottled, OrderpayError
from orderpay.notify.delivery import (
    FIRST_GROUP,
    GIVEN_BACK,
    GROUPED_CHANNELS,
    Batch,
    Channels,
    Delivery,
    DeliveryResult,
    RetryPolicy,
    claim_group,
    failed_try,
    group_size,
    held,
    lease_covers_a_send,
    not_taken,
    record_group,
    send_deadline,
    send_one,
)
from orderpay.notify.messages import render
from orderpay.notify.sending import ChannelLimits, Sender, Throttle
from orderpay.store.db import Transactional
from orderpay.store.notification_attempts import Attempt, Outcome, Recorded

log = logging.getLogger("orderpay.notify")


@dataclass(frozen=True, slots=True)
class _Sending:
    attempt: Attempt
    body: str
    throttle: Throttle
    deadline: float  # time.monotonic() by which the send ends


# The longest the job's thread waits without looking at `stop` and the clock.
LOOK_AGAIN_SECONDS = 0.5
# A send still unanswered this long after its deadline will not be (the sender's loop is
# gone): its row is left to its lease, as a killed worker's is.
LOST_AFTER_SECONDS = 2.0


def deliver_concurrently(
    db: Transactional,
    channels: Channels,
    sender: Sender,
    notification_ids: Sequence[int],
    *,
    merchant_name: str,
    policy: RetryPolicy,
    stop: Callable[[], bool] = lambda: False,
    deadline: float | None = None,
) -> Batch:
    """Deliver these rows (an RQ job's, or the embedded worker's), each through its own
    channel, many in flight: what a worker with a Sender runs.

    Rows are claimed as their channel's throttle has room (sends in flight below its cap, and
    its rate), each right before its send, which runs on the sender's event loop and ends
    before its claim's lease does. Whatever sends have ended are recorded together, right
    away, then as many rows are claimed as have ended. A 429 gives the row back uncounted, due
    when the channel's pause ends, and pauses the channel: the row is claimed again then, in
    this batch if its time allows. Rows of a channel with no network (log) are sent in claimed
    groups sized by GROUP_SECONDS. `stop()` and `deadline` end the claims: the sends in
    flight end and are recorded, and the rows not tried are in `left`.
    """
    remaining = list(dict.fromkeys(notification_ids))
    results: list[DeliveryResult] = []
    lease = timedelta(seconds=policy.lease_seconds)
    in_flight: dict[concurrent.futures.Future[str], _Sending] = {}
    waiting: collections.deque[Attempt] = collections.deque()  # claimed, their channel full
    ended: list[Recorded] = []  # not yet recorded
    group = FIRST_GROUP  # rows of a grouped channel per claim (group_size)
    last_channel: str | None = None
    resume_at: float | None = None  # when a throttled row of this batch is due again

    def over() -> bool:
        return stop() or (deadline is not None and time.monotonic() >= deadline)

    def record() -> None:
        nonlocal ended
        done, ended = ended, []
        results.extend(record_group(db, done, policy))
        again = [r.attempt.notification_id for r in done if r.outcome in GIVEN_BACK]
        remaining.extend(nid for nid in again if nid not in remaining)

    def start(attempt: Attempt) -> None:
        try:
            channel = channels(attempt.channel)
        except OrderpayError as error:
            ended.append(held(attempt, error, policy))
            return
        body = ""
        try:
            message = render(attempt, merchant_name)
            body = message.text
            throttle = sender.throttle(attempt.channel)
            deadline = send_deadline(attempt, policy)
            future = sender.submit(channel, message, deadline)
        except Exception as error:  # this row's failed try, as in send_one
            ended.append(failed_try(attempt, body, error, policy))
            return
        throttle.started()
        in_flight[future] = _Sending(attempt, body, throttle, deadline)

    def drop_lost() -> None:
        now = time.monotonic()
        lost = [f for f, s in in_flight.items() if now > s.deadline + LOST_AFTER_SECONDS]
        for future in lost:
            sending = in_flight.pop(future)
            future.cancel()
            sending.throttle.ended()
            attempt = sending.attempt
            reason = "its send did not end by its deadline: left to its lease"
            log.warning("notification %s: %s", attempt.notification_id, reason)
            lease_left = (attempt.lease_until - utcnow()).total_seconds()
            results.append(
                DeliveryResult(
                    Delivery.SKIPPED,
                    attempt.notification_id,
                    attempt.number,
                    reason,
                    None,
                    lease_left,
                )
            )

    def finish(future: concurrent.futures.Future[str]) -> None:
        nonlocal resume_at
        sending = in_flight.pop(future)
        attempt, throttle = sending.attempt, sending.throttle
        try:
            message_id = future.result()
        except GatewayThrottled as error:
            throttle.ended(throttled=True, retry_after=error.retry_after)
            pause = max(0.0, throttle.paused_until - throttle.clock())
            log.info("notification %s: %s", attempt.notification_id, error.message)
            due_at = utcnow() + timedelta(seconds=pause)
            ended.append(Recorded(attempt, Outcome.THROTTLED, error=error.message, due_at=due_at))
            resume_at = min(resume_at or math.inf, time.monotonic() + pause)
            return
        except Exception as error:  # this row's failed try, and only this row's
            throttle.ended()
            ended.append(failed_try(attempt, sending.body, error, policy))
            return
        throttle.ended()
        ended.append(Recorded(attempt, Outcome.SENT, body=sending.body, message_id=message_id))

    try:
        while True:
            for future in [future for future in in_flight if future.done()]:
                finish(future)
            drop_lost()
            while waiting:  # rows claimed for a channel that was full
                attempt = waiting[0]
                if over() or not lease_covers_a_send(attempt, policy):
                    ended.append(Recorded(waiting.popleft(), Outcome.RELEASED))
                elif sender.throttle(attempt.channel).free() > 0:
                    start(waiting.popleft())
                else:
                    break
            if ended:
                record()
            claimed: list[Attempt] = []
            room = 0
            if remaining and not waiting and not over():
                if last_channel is None or last_channel in GROUPED_CHANNELS:
                    room = group
                else:
                    room = sender.throttle(last_channel).free()
                if room > 0:
                    claimed = claim_group(db, remaining, room, lease, policy.max_attempts)
                    taken = {attempt.notification_id for attempt in claimed}
                    remaining[:] = [nid for nid in remaining if nid not in taken]
            grouped = [a for a in claimed if a.channel in GROUPED_CHANNELS]
            if grouped:
                started = time.monotonic()
                ended.extend(send_one(channels, a, merchant_name, policy) for a in grouped)
                group = group_size((time.monotonic() - started) / len(grouped))
            for attempt in claimed:
                last_channel = attempt.channel
                if attempt.channel in GROUPED_CHANNELS:
                    continue
                if sender.throttle(attempt.channel).free() > 0:
                    start(attempt)
                else:
                    waiting.append(attempt)
            if claimed or ended:
                continue
            # Nothing started now: wait for a send to end, for the channel to have room (its
            # rate, or the end of a pause), or for a throttled row to come due; end the batch
            # when none of those will happen within its time.
            now = time.monotonic()
            wake = [LOOK_AGAIN_SECONDS]
            if remaining and not over():
                if waiting or room == 0:  # the channel is full, or starts nothing yet
                    assert last_channel is not None
                    when = sender.throttle(last_channel).next_start()
                    later = [] if when is None else [when]
                else:  # room, but no row due among ours: a throttled one may come due
                    later = [] if resume_at is None else [resume_at]
                if deadline is not None:
                    later = [at for at in later if at < deadline]
                if not later and not in_flight:
                    break  # the rest is due after this batch, or not ours: left pending
                wake += [at - now for at in later]
            elif not in_flight:
                break
            timeout = max(0.001, min(wake))
            if in_flight:
                concurrent.futures.wait(
                    in_flight, timeout, return_when=concurrent.futures.FIRST_COMPLETED
                )
            else:
                time.sleep(timeout)
            if resume_at is not None and time.monotonic() >= resume_at:
                resume_at = None
    finally:
        # Also on the way out of an error: the sends in flight end by their deadlines and are
        # recorded with everything ended, before the error goes up.
        if in_flight:
            last = max(sending.deadline for sending in in_flight.values())
            concurrent.futures.wait(
                in_flight, max(0.0, last + LOST_AFTER_SECONDS - time.monotonic())
            )
            for future in [future for future in in_flight if future.done()]:
                finish(future)
            drop_lost()
        ended.extend(Recorded(attempt, Outcome.RELEASED) for attempt in waiting)
        waiting.clear()
        if ended:
            record()
    if over():
        return Batch(results, remaining)
    return Batch(results + not_taken(db, remaining, policy), [])


def deliver_batch(
    db: Transactional,
    channels: Channels,
    notification_ids: Sequence[int],
    *,
    merchant_name: str,
    policy: RetryPolicy,
    stop: Callable[[], bool] = lambda: False,
    deadline: float | None = None,
) -> Batch:
    """deliver_concurrently with one send in flight per channel, on a Sender of its own: for
    a caller that runs no worker's Sender."""
    sender = Sender(lambda _name: ChannelLimits(1))
    try:
        return deliver_concurrently(
            db,
            channels,
            sender,
            notification_ids,
            merchant_name=merchant_name,
            policy=policy,
            stop=stop,
            deadline=deadline,
        )
    finally:
        sender.close()
