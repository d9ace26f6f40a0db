"""An outage is told once: a WARNING when it begins, an INFO when a step that began after it
succeeds (not one that began before and finished as the dependency went away)."""

from __future__ import annotations

import logging

import pytest

from orderpay.store.outages import Outage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_step_that_began_before_the_outage_does_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage("the database", clock=clock)
    began = clock()
    clock.now += 1
    caplog.set_level(logging.INFO, logger="orderpay.outages")

    outage.failed("LISTEN connection lost")
    outage.recovered(began)  # another thread's step, started before the connection went
    outage.failed("relay paused")

    assert outage.down
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_a_step_that_began_after_the_outage_ends_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = Outage("the database", clock=clock)
    caplog.set_level(logging.INFO, logger="orderpay.outages")
    outage.failed("relay paused")
    clock.now += 3

    outage.recovered(clock())

    assert not outage.down
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
