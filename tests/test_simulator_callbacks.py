"""The simulator's callback as the operator meets it: the installed `orderpay charge` posts it
to a real listener (or another real HTTP server); a refused callback is one warning line on
stderr naming the status and its likely cause, and the payment stays pending."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.store.db import Database
from orderpay.store.orders import get_order
from orderpay.store.payments import payments_of
from tests.builders import a_key, an_order
from tests.http_recorder import Answer, recording_server
from tests.live_server import SECRET, listener, listener_settings
from tests.user_shell import Run, orderpay

OTHER_SECRET = "another-callback-secret-9876543210fedcba"


def charge(
    tmp_path: Path, database_url: str, order_id: uuid.UUID, callback_url: str, secret: str | None
) -> Run:
    """`orderpay charge ORDER --key NEW --json` with the simulator posting to `callback_url`."""
    env = {"DATABASE_URL": database_url, "ORDERPAY_SIMULATOR_CALLBACK_URL": callback_url}
    if secret is not None:
        env["MOMO_WEBHOOK_SECRET"] = secret
    return orderpay(tmp_path, "charge", str(order_id), "--key", a_key(), "--json", env=env)


def the_warning(charged: Run) -> str:
    """The one line on stderr of a charge that answered `pending` with exit 0."""
    assert charged.exit_code == 0, charged.stderr
    assert charged.json()["status"] == "pending"
    (line,) = charged.stderr.splitlines()
    return line


def statuses(db: Database, order_id: uuid.UUID) -> tuple[OrderStatus, PaymentStatus]:
    with db.transaction() as conn:
        (payment,) = payments_of(conn, [order_id])
        return get_order(conn, order_id).status, payment.status


STILL_PENDING = (OrderStatus.PENDING, PaymentStatus.PENDING)


@pytest.mark.slow
def test_a_callback_the_listener_accepts_settles_the_payment_without_a_warning(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    order = an_order(db)

    with listener(listener_settings(pg_url)) as server:
        charged = charge(tmp_path, pg_url, order.id, server.callback_url, SECRET)

    assert charged.exit_code == 0, charged.stderr
    assert charged.stderr == ""
    assert statuses(db, order.id) == (OrderStatus.PAID, PaymentStatus.SUCCEEDED)


@pytest.mark.slow
def test_a_callback_refused_for_its_signature_warns_that_the_secrets_differ(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    order = an_order(db)

    with listener(listener_settings(pg_url, MOMO_WEBHOOK_SECRET=OTHER_SECRET)) as server:
        charged = charge(tmp_path, pg_url, order.id, server.callback_url, SECRET)

    line = the_warning(charged)
    assert line.startswith("simulator callback for payment ")
    assert f"refused: HTTP 401 from {server.callback_url}: " in line
    assert "the listener's MOMO_WEBHOOK_SECRET differs from this process's" in line
    assert SECRET not in line
    assert OTHER_SECRET not in line
    assert statuses(db, order.id) == STILL_PENDING


@pytest.mark.slow
def test_an_unsigned_callback_refused_warns_that_the_command_has_no_secret(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    order = an_order(db)

    with listener(listener_settings(pg_url)) as server:
        charged = charge(tmp_path, pg_url, order.id, server.callback_url, secret=None)

    line = the_warning(charged)
    assert "refused: HTTP 401 from " in line
    assert "this process has no MOMO_WEBHOOK_SECRET to sign with" in line
    assert statuses(db, order.id) == STILL_PENDING


@pytest.mark.parametrize(
    ("listener_secret", "path"),
    [(SECRET, "/api/webhooks/mom/"), (None, "/api/webhooks/momo/")],
    ids=["wrong-path", "listener-without-secret"],
)
@pytest.mark.slow
def test_a_callback_answered_404_by_the_router_warns_about_the_path_or_the_listeners_secret(
    pg_url: str, db: Database, tmp_path: Path, listener_secret: str | None, path: str
) -> None:
    order = an_order(db)

    with listener(listener_settings(pg_url, MOMO_WEBHOOK_SECRET=listener_secret)) as server:
        charged = charge(tmp_path, pg_url, order.id, server.url + path, SECRET)

    line = the_warning(charged)
    assert f"refused: HTTP 404 from {server.url}{path}: " in line
    assert "check the path of ORDERPAY_SIMULATOR_CALLBACK_URL" in line
    assert "or the listener has no MOMO_WEBHOOK_SECRET" in line
    assert statuses(db, order.id) == STILL_PENDING


@pytest.mark.slow
def test_a_callback_to_a_listener_on_another_database_warns_that_it_has_no_such_payment(
    pg_url: str, db: Database, sqlite_url: str, tmp_path: Path
) -> None:
    order = an_order(db)

    with listener(listener_settings(sqlite_url)) as server:
        charged = charge(tmp_path, pg_url, order.id, server.callback_url, SECRET)

    line = the_warning(charged)
    assert "refused: HTTP 404 from " in line
    assert "the listener has no such payment; does it use this process's database?" in line
    assert statuses(db, order.id) == STILL_PENDING


@pytest.mark.slow
def test_any_other_refusal_names_the_status_and_the_url_without_its_credentials(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    order = an_order(db)

    with recording_server() as far_end:
        far_end.answer_with(
            lambda _request: Answer(status=500, body=b"oops", content_type="text/plain")
        )
        address = far_end.url.removeprefix("http://")
        callback_url = (
            f"http://callback-user:hunter2-password@{address}/hooks/momo?token=query-token-value"
        )
        charged = charge(tmp_path, pg_url, order.id, callback_url, SECRET)
        far_end.wait_for(1)

    line = the_warning(charged)
    assert f"refused: HTTP 500 from http://{address}/hooks/momo; " in line
    for secret in ("callback-user", "hunter2-password", "query-token-value"):
        assert secret not in line
    assert statuses(db, order.id) == STILL_PENDING
