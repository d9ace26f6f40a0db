"""The `--status` filters offer the domain's statuses (orderpay.domain.states), every one of
them, as the words users type: each selects the rows in that status and no other."""

from __future__ import annotations

import json
import uuid
from enum import StrEnum

import pytest
from sqlalchemy import update

from orderpay.domain.states import NotificationStatus, OrderStatus, PaymentStatus
from orderpay.payments.charge import charge_order
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from orderpay.store.schema import notifications, orders, payments
from tests.builders import a_key, an_order
from tests.conftest import Cli
from tests.redis_helpers import LOG_TARGET, a_settled_payment


def orders_in_every_status(db: Database) -> dict[OrderStatus, uuid.UUID]:
    """One order in each status, written as rows (test set-up: no payment needed)."""
    made = {}
    for status in OrderStatus:
        order = an_order(db)
        with db.transaction() as conn:
            conn.execute(update(orders).where(orders.c.id == order.id).values(status=status))
        made[status] = order.id
    return made


def payments_in_every_status(db: Database) -> dict[PaymentStatus, uuid.UUID]:
    """One payment in each status, each of its own order, its status written as a row."""
    made = {}
    for status in PaymentStatus:
        order = an_order(db)
        charged = charge_order(
            db,
            SimulatorProvider(),
            order_id=order.id,
            key=a_key(),
            default_region="GH",
            lease_seconds=90,
        )
        with db.transaction() as conn:
            conn.execute(
                update(payments).where(payments.c.id == charged.payment.id).values(status=status)
            )
        made[status] = charged.payment.id
    return made


def notifications_in_every_status(db: Database) -> dict[NotificationStatus, int]:
    """One notification in each status, each of its own paid order, its status written as a
    row."""
    made = {}
    for status in NotificationStatus:
        settled = a_settled_payment(db, target=LOG_TARGET)
        with db.transaction() as conn:
            conn.execute(
                update(notifications)
                .where(notifications.c.id == settled.notification_id)
                .values(status=status)
            )
        made[status] = settled.notification_id
    return made


@pytest.mark.parametrize("status", list(OrderStatus), ids=str)
def test_order_list_takes_every_order_status_and_lists_only_the_orders_in_it(
    cli: Cli, db: Database, status: OrderStatus
) -> None:
    made = orders_in_every_status(db)

    listed = cli.items("order", "list", "--status", status.value)

    assert [(o["id"], o["status"]) for o in listed] == [(str(made[status]), status.value)]


@pytest.mark.parametrize("status", list(PaymentStatus), ids=str)
def test_payment_list_takes_every_payment_status_and_lists_only_the_payments_in_it(
    cli: Cli, db: Database, status: PaymentStatus
) -> None:
    made = payments_in_every_status(db)

    listed = cli.items("payment", "list", "--status", status.value)

    assert [(p["id"], p["status"]) for p in listed] == [(str(made[status]), status.value)]


@pytest.mark.parametrize("status", list(PaymentStatus), ids=str)
def test_payment_export_takes_every_payment_status_and_exports_only_the_payments_in_it(
    cli: Cli, db: Database, status: PaymentStatus
) -> None:
    made = payments_in_every_status(db)

    outcome = cli("payment", "export", "--status", status.value, "--json")

    assert outcome.exit_code == 0, outcome.stderr
    exported = json.loads(outcome.stdout)
    assert [(p["payment_id"], p["status"]) for p in exported] == [(str(made[status]), status.value)]


@pytest.mark.parametrize("status", list(NotificationStatus), ids=str)
def test_notification_list_takes_every_notification_status_and_lists_only_the_ones_in_it(
    cli: Cli, db: Database, status: NotificationStatus
) -> None:
    made = notifications_in_every_status(db)

    listed = cli.items("notification", "list", "--status", status.value)

    assert [(n["id"], n["status"]) for n in listed] == [(made[status], status.value)]


STATUS_OPTIONS = {
    "order list": (("order", "list"), OrderStatus),
    "payment list": (("payment", "list"), PaymentStatus),
    "payment export": (("payment", "export"), PaymentStatus),
    "notification list": (("notification", "list"), NotificationStatus),
}


@pytest.mark.parametrize(("command", "statuses"), STATUS_OPTIONS.values(), ids=STATUS_OPTIONS)
def test_help_lists_every_status_the_status_option_takes(
    command: tuple[str, ...], statuses: type[StrEnum]
) -> None:
    outcome = Cli({})(*command, "--help")

    assert outcome.exit_code == 0
    assert f"--status <{'|'.join(statuses)}>" in outcome.stdout
