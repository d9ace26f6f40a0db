"""A channel's pace in one worker (notify.sending.Throttle): its cap on sends in flight, its
rate, and its pause after the gateway asks to slow down; and how a 429 is read. Time is a
fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from orderpay.errors import GatewayThrottled
from orderpay.notify.channels import (
    MAX_RETRY_AFTER_SECONDS,
    OutgoingMessage,
    SmsChannel,
    WebhookChannel,
    retry_after_seconds,
)
from orderpay.notify.sending import (
    FIRST_PAUSE_SECONDS,
    LONGEST_PAUSE_SECONDS,
    ChannelLimits,
    Throttle,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_throttle(max_in_flight: int = 10, per_second: float | None = None) -> tuple[Throttle, Clock]:
    clock = Clock()
    return Throttle(ChannelLimits(max_in_flight, per_second), clock), clock


def test_a_channel_at_its_cap_starts_nothing_until_a_send_ends() -> None:
    throttle, _ = a_throttle(max_in_flight=2)
    throttle.started()
    throttle.started()

    assert throttle.free() == 0
    throttle.ended()
    assert throttle.free() == 1


def test_a_rate_limited_channel_starts_a_seconds_worth_at_once_then_one_per_interval() -> None:
    throttle, clock = a_throttle(per_second=4)
    for _ in range(throttle.free()):
        throttle.started()
        throttle.ended()

    assert throttle.free() == 0
    assert throttle.next_start() == pytest.approx(clock.now + 0.25)
    clock.now += 0.25
    assert throttle.free() == 1


def test_a_rate_below_one_a_second_allows_one_send_then_waits_its_interval() -> None:
    throttle, clock = a_throttle(per_second=0.5)
    assert throttle.free() == 1
    throttle.started()
    throttle.ended()

    assert throttle.free() == 0
    assert throttle.next_start() == pytest.approx(clock.now + 2.0)


def test_a_429_with_retry_after_pauses_the_channel_that_long() -> None:
    throttle, clock = a_throttle()
    throttle.started()
    throttle.ended(throttled=True, retry_after=7.0)

    assert (throttle.free(), throttle.next_start()) == (0, clock.now + 7.0)
    clock.now += 7.0
    assert throttle.free() == 10


def test_429s_without_retry_after_double_the_pause_up_to_the_longest() -> None:
    throttle, clock = a_throttle()
    pauses = []
    for _ in range(10):
        throttle.started()
        throttle.ended(throttled=True)
        pauses.append(throttle.paused_until - clock.now)
        clock.now = throttle.paused_until

    assert pauses[:3] == [FIRST_PAUSE_SECONDS, 2 * FIRST_PAUSE_SECONDS, 4 * FIRST_PAUSE_SECONDS]
    assert pauses[-1] == LONGEST_PAUSE_SECONDS


def test_a_send_that_goes_through_resets_the_pause_to_the_first() -> None:
    throttle, clock = a_throttle()
    for _ in range(3):
        throttle.started()
        throttle.ended(throttled=True)
        clock.now = throttle.paused_until
    throttle.started()
    throttle.ended()
    throttle.started()
    throttle.ended(throttled=True)

    assert throttle.paused_until - clock.now == FIRST_PAUSE_SECONDS


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("86400", MAX_RETRY_AFTER_SECONDS),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_and_refuses_what_is_not_a_wait(
    header: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(header) == seconds


def test_retry_after_reads_an_http_date() -> None:
    now = datetime(2026, 12, 8, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)

    assert retry_after_seconds(header, now=now.timestamp()) == 30.0


MESSAGE = OutgoingMessage(7, "+233241234567", "Hi", {"notification": 7})


@pytest.mark.parametrize(
    "channel",
    [
        SmsChannel(base_url="http://sms", username="u", api_key="k", sender_id=None, timeout=1),
        WebhookChannel(secret=b"s" * 32, timeout=1),
    ],
    ids=["sms", "webhook"],
)
def test_a_429_is_throttling_with_the_gateways_retry_after(channel: SmsChannel) -> None:
    with pytest.raises(GatewayThrottled) as throttled:
        channel.read_answer(MESSAGE, 429, {"retry-after": "12"}, b"")

    assert throttled.value.retry_after == 12.0
    assert "slow down (HTTP 429, Retry-After 12 s)" in throttled.value.message
