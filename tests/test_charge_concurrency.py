"""Charges racing each other in real parallel processes, and charges killed mid-flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from orderpay import clock
from orderpay.clock import utcnow
from orderpay.domain.states import PaymentStatus
from orderpay.store.db import Database
from orderpay.store.payments import payments_of
from tests.builders import an_order
from tests.conftest import Cli
from tests.http_recorder import Answer, recording_server
from tests.processes import run_cli_in_parallel

PROCESSES = 12


@pytest.mark.slow
def test_twelve_processes_charging_one_key_make_one_payment_and_one_provider_request(
    pg_url: str, db: Database
) -> None:
    order = an_order(db)
    with recording_server() as provider_side:
        env = {"DATABASE_URL": pg_url, "ORDERPAY_SIMULATOR_CALLBACK_URL": provider_side.url}

        codes = run_cli_in_parallel(env, [["charge", str(order.id), "--key", "k-1"]] * PROCESSES)

        # Every process has exited: a request any of them made has been answered, so recorded.
        provider_requests = provider_side.count()
    with db.transaction() as conn:
        payments = payments_of(conn, [order.id])
    assert len(payments) == 1
    assert provider_requests == 1
    # Each process either replayed the stored payment or was told the key is in flight.
    assert set(codes) <= {0, 4}, codes
    assert 0 in codes


@pytest.mark.slow
def test_twelve_processes_with_twelve_keys_leave_one_live_payment_and_eleven_conflicts(
    pg_url: str, db: Database
) -> None:
    order = an_order(db)
    argvs = [["charge", str(order.id), "--key", f"k-{n}"] for n in range(PROCESSES)]

    codes = run_cli_in_parallel({"DATABASE_URL": pg_url}, argvs)

    with db.transaction() as conn:
        payments = payments_of(conn, [order.id])
    assert Counter(codes) == Counter({0: 1, 4: PROCESSES - 1})
    assert [p.status for p in payments] == [PaymentStatus.PENDING]


@pytest.mark.slow
def test_concurrent_charges_of_one_key_on_sqlite_make_one_payment(
    sqlite_url: str, tmp_path: Any
) -> None:
    database = Database(sqlite_url)
    order = an_order(database)
    with recording_server() as provider_side:
        env = {"DATABASE_URL": sqlite_url, "ORDERPAY_SIMULATOR_CALLBACK_URL": provider_side.url}

        codes = run_cli_in_parallel(env, [["charge", str(order.id), "--key", "k-1"]] * 6)

        provider_requests = provider_side.count()
    with database.transaction() as conn:
        payments = payments_of(conn, [order.id])
    database.dispose()
    assert (len(payments), provider_requests) == (1, 1)
    assert set(codes) <= {0, 4}, codes


def _orderpay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orderpay", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_charge_killed_while_the_provider_is_answering_is_resumed_once_its_lease_expires(
    pg_url: str, db: Database
) -> None:
    order = an_order(db)
    with recording_server() as provider_side:
        provider_side.answer_with(lambda _request: Answer(delay=30))  # the provider hangs
        env = {
            "DATABASE_URL": pg_url,
            "ORDERPAY_SIMULATOR_CALLBACK_URL": provider_side.url,
            # Long enough for the next process to start (slowly, on a busy machine) in it.
            "ORDERPAY_CHARGE_LEASE_SECONDS": "8",
        }
        doomed = subprocess.Popen(
            [sys.executable, "-m", "orderpay", "charge", str(order.id), "--key", "k-1"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        provider_side.wait_for(1, timeout=30)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        provider_side.answer_with(lambda _request: Answer())

        while_leased = _orderpay(env, "charge", str(order.id), "--key", "k-1")
        with db.transaction() as conn:
            (held,) = payments_of(conn, [order.id])
        assert held.lease_expires_at is not None
        # The lease runs out (this process's clock moves past it), and the key is run again.
        clock.advance(held.lease_expires_at - utcnow() + timedelta(seconds=1))
        resumed = Cli(env)("charge", str(order.id), "--key", "k-1", "--json")

    with db.transaction() as conn:
        payments = payments_of(conn, [order.id])
    assert while_leased.returncode == 4, while_leased.stderr
    assert "idempotency_key_in_use" in while_leased.stderr
    assert resumed.exit_code == 0, resumed.stderr
    (payment,) = payments
    assert payment.status is PaymentStatus.PENDING
    assert json.loads(resumed.stdout)["id"] == str(payment.id)
