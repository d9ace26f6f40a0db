"""`orderpay charge` with ORDERPAY_PROVIDER=mtn, against the fake MTN server (tests/fake_mtn.py).

One request to pay per payment, whatever happens around it: replays, timeouts, 5xx answers,
concurrent processes and processes killed mid-request all end with MTN holding one transfer
under the payment id. Nothing here reaches MTN; the sandbox takes EUR only, so orders are in EUR.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import pytest

from orderpay import clock
from orderpay.clock import utcnow
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.payments.charge import charge_order
from orderpay.providers.mtn import MtnProvider
from orderpay.store.db import Database
from orderpay.store.orders import Order, get_order
from orderpay.store.payments import Payment, payments_of
from tests.builders import MTN_SANDBOX_PAYER, a_key, an_order
from tests.conftest import Cli
from tests.fake_mtn import REQUEST_TO_PAY_PATH, TOKEN_PATH, FakeMtn
from tests.processes import run_cli_in_parallel

PROCESSES = 12
# With a 2 s lease the MTN client's whole budget is 1 s, so a hanging MTN times out quickly.
SHORT_LEASE = {"ORDERPAY_CHARGE_LEASE_SECONDS": "2"}

T = TypeVar("T")


@pytest.fixture
def mtn_cli(pg_url: str, mtn: FakeMtn) -> Cli:
    return Cli({"DATABASE_URL": pg_url, **mtn.env()})


def an_mtn_order(db: Database, payer: str = MTN_SANDBOX_PAYER) -> Order:
    """A pending order of 25.00 EUR whose customer pays from an MTN sandbox number."""
    return an_order(db, phone=payer, currency="EUR")


def charge(db: Database, provider: MtnProvider, order: Order) -> Payment:
    """Charge through the service layer, as one process does."""
    return charge_order(
        db, provider, order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
    ).payment


def the_payment(db: Database, order: Order) -> Payment:
    with db.transaction() as conn:
        (payment,) = payments_of(conn, [order.id])
        return payment


def first_payment(db: Database, order: Order) -> Payment | None:
    with db.transaction() as conn:
        found = payments_of(conn, [order.id])
    return found[0] if found else None


def order_status(db: Database, order: Order) -> OrderStatus:
    with db.transaction() as conn:
        return get_order(conn, order.id).status


def references(mtn: FakeMtn) -> list[str]:
    """The X-Reference-Id of every request to pay MTN answered, in order."""
    return [r.headers["x-reference-id"] for r in mtn.requests if r.kind == "requesttopay"]


def answers(mtn: FakeMtn) -> list[int]:
    """MTN's HTTP status for every request to pay it answered, in order."""
    return [r.status for r in mtn.requests if r.kind == "requesttopay"]


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


# Outcomes of one request to pay.


def test_an_accepted_request_to_pay_leaves_the_payment_pending_and_exits_0(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)

    outcome = mtn_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert outcome.exit_code == 0, outcome.stderr
    payment = outcome.json()
    assert (payment["status"], payment["provider"]) == ("pending", "mtn")
    assert (payment["amount"], payment["currency"]) == ("25.00", "EUR")
    assert payment["provider_reference"] == payment["id"]
    assert references(mtn) == [payment["id"]]
    assert answers(mtn) == [202]


def test_mtns_already_exists_answer_is_taken_as_submitted_and_the_payment_is_pending(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.fail("requesttopay", 409, "RESOURCE_ALREADY_EXIST")

    outcome = mtn_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.json()["status"] == "pending"
    assert answers(mtn) == [409]


@pytest.mark.parametrize(
    ("refuse", "code"),
    [
        pytest.param(lambda fake: fake.refuse("NOT_ALLOWED"), "NOT_ALLOWED", id="refused"),
        pytest.param(
            lambda fake: fake.refuse_payer(MTN_SANDBOX_PAYER, "PAYER_NOT_FOUND", 404),
            "PAYER_NOT_FOUND",
            id="payer-refused",
        ),
    ],
)
def test_a_definite_refusal_fails_the_payment_with_mtns_reason_and_exits_6(
    mtn_cli: Cli, db: Database, mtn: FakeMtn, refuse: Callable[[FakeMtn], None], code: str
) -> None:
    order = an_mtn_order(db)
    refuse(mtn)

    outcome = mtn_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert outcome.exit_code == 6, outcome.stderr
    error = outcome.error()
    assert error["code"] == "payment_declined"
    assert error["reason"] == code
    payment = the_payment(db, order)
    assert (payment.status, payment.failure_reason) == (PaymentStatus.FAILED, code)


def test_after_a_refusal_the_order_is_still_pending_and_a_new_key_charges_it(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.refuse("NOT_ALLOWED")
    refused = mtn_cli("charge", str(order.id), "--key", "order-1")
    assert refused.exit_code == 6, refused.stderr

    retried = mtn_cli("charge", str(order.id), "--key", "order-2", "--json")

    assert order_status(db, order) is OrderStatus.PENDING
    assert retried.exit_code == 0, retried.stderr
    assert retried.json()["status"] == "pending"
    assert answers(mtn) == [400, 202]


def test_replaying_a_refused_key_exits_6_again_without_asking_mtn(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.refuse("NOT_ALLOWED")
    mtn_cli("charge", str(order.id), "--key", "order-1")
    asked = sum(mtn.counts().values())

    again = mtn_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert again.exit_code == 6, again.stderr
    assert again.error()["replayed"] is True
    assert sum(mtn.counts().values()) == asked


@pytest.mark.slow
def test_a_request_to_pay_that_times_out_leaves_the_payment_initiated_and_exits_7(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.hang("requesttopay", 30)

    outcome = mtn_cli("charge", str(order.id), "--key", "order-1", "--json", **SHORT_LEASE)

    assert outcome.exit_code == 7, outcome.stderr
    assert outcome.error()["code"] == "provider_unavailable"
    assert the_payment(db, order).status is PaymentStatus.INITIATED
    assert order_status(db, order) is OrderStatus.PENDING


@pytest.mark.parametrize(("status", "code"), [(500, None), (503, "SERVICE_UNAVAILABLE")])
def test_a_request_to_pay_answered_with_a_server_error_leaves_the_payment_initiated_and_exits_7(
    mtn_cli: Cli, db: Database, mtn: FakeMtn, status: int, code: str | None
) -> None:
    order = an_mtn_order(db)
    mtn.fail("requesttopay", status, code)

    outcome = mtn_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert outcome.exit_code == 7, outcome.stderr
    assert outcome.error()["code"] == "provider_unavailable"
    assert the_payment(db, order).status is PaymentStatus.INITIATED


# One request per reference across retries and crashes.


def test_replaying_a_key_sends_no_second_request_to_mtn(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    first = mtn_cli.ok("charge", str(order.id), "--key", "order-1")

    again = mtn_cli.ok("charge", str(order.id), "--key", "order-1")

    assert again["replayed"] is True
    assert again["id"] == first["id"]
    assert mtn.counts() == Counter({TOKEN_PATH: 1, REQUEST_TO_PAY_PATH: 1})


@pytest.mark.slow
def test_rerunning_a_key_after_a_timeout_resubmits_the_same_reference_and_mtn_holds_one_transfer(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.hang("requesttopay", 30, process=True)  # MTN takes the request, the answer never comes
    timed_out = mtn_cli("charge", str(order.id), "--key", "order-1", **SHORT_LEASE)
    assert timed_out.exit_code == 7, timed_out.stderr

    resumed = mtn_cli("charge", str(order.id), "--key", "order-1", "--json", **SHORT_LEASE)

    assert resumed.exit_code == 0, resumed.stderr
    payment = resumed.json()
    assert payment["status"] == "pending"
    # The hung request is still open at MTN (not yet recorded); the retry is a duplicate.
    assert references(mtn) == [payment["id"]]
    assert answers(mtn) == [409]
    assert mtn.transfer(payment["id"]) is not None


def test_rerunning_a_key_after_a_500_resubmits_the_same_reference_and_mtn_holds_one_transfer(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.fail("requesttopay", 500, process=True)  # MTN stored it, then answered 500
    failed = mtn_cli("charge", str(order.id), "--key", "order-1")
    assert failed.exit_code == 7, failed.stderr

    resumed = mtn_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    payment = resumed.json()
    assert payment["status"] == "pending"
    assert references(mtn) == [payment["id"], payment["id"]]
    assert answers(mtn) == [500, 409]


def test_rerunning_a_key_after_mtn_lost_the_request_submits_it_under_the_same_reference(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.fail("requesttopay", 503)  # refused before MTN stored anything
    failed = mtn_cli("charge", str(order.id), "--key", "order-1")
    assert failed.exit_code == 7, failed.stderr

    resumed = mtn_cli("charge", str(order.id), "--key", "order-1", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    payment = resumed.json()
    assert references(mtn) == [payment["id"], payment["id"]]
    assert answers(mtn) == [503, 202]
    assert mtn.transfer(payment["id"]) is not None


@pytest.mark.slow
def test_twelve_processes_charging_one_order_with_one_key_make_one_request_to_pay(
    pg_url: str, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    db.dispose()  # the children must not inherit the pool's connections
    env = {"DATABASE_URL": pg_url, **mtn.env()}

    codes = run_cli_in_parallel(env, [["charge", str(order.id), "--key", "k-1"]] * PROCESSES)

    # Every process has exited: a request to pay any of them made has been answered, and so
    # recorded by the fake.
    payment = the_payment(db, order)
    assert set(codes) <= {0, 4}, codes
    assert 0 in codes
    assert payment.status is PaymentStatus.PENDING
    assert references(mtn) == [str(payment.id)]
    assert answers(mtn) == [202]


@pytest.mark.slow
def test_a_charge_killed_after_mtn_took_the_request_is_resumed_by_its_key_after_the_lease(
    pg_url: str, db: Database, mtn: FakeMtn
) -> None:
    order = an_mtn_order(db)
    mtn.hang("requesttopay", 30, process=True)  # MTN stores it; the process dies waiting
    # A 4 s lease gives the client 2 s to wait for MTN: ample time to kill it first.
    env = {"DATABASE_URL": pg_url, **mtn.env(), "ORDERPAY_CHARGE_LEASE_SECONDS": "4"}
    doomed = subprocess.Popen(
        [sys.executable, "-m", "orderpay", "charge", str(order.id), "--key", "k-1"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        claimed = wait_for(lambda: first_payment(db, order), timeout=30)
        wait_for(lambda: mtn.transfer(claimed.id), timeout=10)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    assert doomed.returncode == -signal.SIGKILL  # killed mid-request, before step 3
    assert the_payment(db, order).status is PaymentStatus.INITIATED
    assert claimed.lease_expires_at is not None
    clock.advance(claimed.lease_expires_at - utcnow() + timedelta(seconds=1))  # the lease ends

    resumed = Cli(env)("charge", str(order.id), "--key", "k-1", "--json")

    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json()["id"] == str(claimed.id)
    assert the_payment(db, order).status is PaymentStatus.PENDING
    # Only the resumed request has been answered; MTN refused it as a duplicate reference.
    assert references(mtn) == [str(claimed.id)]
    assert answers(mtn) == [409]


# The cost of a charge: the token is cached, so one request to pay per charge.


def test_five_charges_in_one_process_cost_one_token_and_five_requests_to_pay(
    db: Database, mtn: FakeMtn
) -> None:
    orders = [an_mtn_order(db) for _ in range(5)]

    with mtn.provider() as provider:
        payments = [charge(db, provider, order) for order in orders]

    assert [p.status for p in payments] == [PaymentStatus.PENDING] * 5
    assert mtn.counts() == Counter({TOKEN_PATH: 1, REQUEST_TO_PAY_PATH: 5})


def test_a_token_is_fetched_again_once_it_has_expired_and_the_next_charge_goes_through(
    db: Database, mtn: FakeMtn
) -> None:
    first, second = an_mtn_order(db), an_mtn_order(db)
    with mtn.provider(clock=mtn.now) as provider:  # the client's clock is the fake's
        charge(db, provider, first)
        mtn.advance(3600)

        payment = charge(db, provider, second)

    assert payment.status is PaymentStatus.PENDING
    assert mtn.counts() == Counter({TOKEN_PATH: 2, REQUEST_TO_PAY_PATH: 2})
    assert answers(mtn) == [202, 202]


def test_a_token_mtn_expired_early_is_replaced_once_and_the_charge_goes_through(
    db: Database, mtn: FakeMtn
) -> None:
    first, second = an_mtn_order(db), an_mtn_order(db)
    with mtn.provider() as provider:
        charge(db, provider, first)
        mtn.expire_tokens()

        payment = charge(db, provider, second)

    assert payment.status is PaymentStatus.PENDING
    assert mtn.calls("token") == 2
    assert answers(mtn) == [202, 401, 202]
    assert references(mtn)[1:] == [str(payment.id), str(payment.id)]


def test_each_charge_process_costs_one_token_and_one_request_to_pay(
    mtn_cli: Cli, db: Database, mtn: FakeMtn
) -> None:
    orders = [an_mtn_order(db) for _ in range(3)]

    for order in orders:
        mtn_cli.ok("charge", str(order.id), "--key", a_key())

    assert mtn.counts() == Counter({TOKEN_PATH: 3, REQUEST_TO_PAY_PATH: 3})
