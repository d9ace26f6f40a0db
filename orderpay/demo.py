"""`orderpay demo`: the whole flow, end to end, on a bare machine.

A private throwaway SQLite database, a real listener on a free loopback port, a charge through
the simulator, whose signed callback arrives over real HTTP, and the database drain run
in-process until the customer's message is sent. It reads no configuration (environment or
`.env`) and never touches Redis: a demo must not write made-up customers and payments into a
shop's real database. `--database-url` opts in to another database, which must hold no
orderpay data.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orderpay.config import Settings, explicit_settings
from orderpay.errors import DatabaseNotEmpty, OrderpayError, Unavailable
from orderpay.runtime import Runtime
from orderpay.store.db import Database
from orderpay.store.orders import OrderDetail

# How long the demo waits for the callback to settle the payment.
SETTLE_TIMEOUT_SECONDS = 15.0

Report = Callable[[str], None]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def listener(settings: Settings, sock: socket.socket) -> Iterator[None]:
    """The real app under uvicorn on a bound loopback socket, in a thread."""
    import uvicorn

    from orderpay.server import create_app

    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="demo-listener"
    )
    thread.start()
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise Unavailable("the demo's listener did not start")
            time.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def run_demo(report: Report, database_url: str | None = None) -> OrderDetail:
    """Run the demo; `report` is told each step. Returns the order as it ends.

    `database_url` (an explicit opt-in) replaces the throwaway SQLite file; it is refused when
    that database already holds orderpay data.
    """
    from orderpay.store.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="orderpay-demo-") as scratch, free_socket() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        runtime = Runtime(
            explicit_settings(
                DATABASE_URL=database_url or f"sqlite:///{Path(scratch) / 'demo.db'}",
                MOMO_WEBHOOK_SECRET=secrets.token_urlsafe(32),
                ORDERPAY_SIMULATOR_CALLBACK_URL=f"{url}/api/webhooks/momo/",
            )
        )
        try:
            database = runtime.raw_database
            if database_url is not None:
                refuse_if_in_use(database)
            report(f"database: {database.label}")
            before, after = upgrade(database)
            report(f"schema: {before or 'empty'} -> {after}")
            with listener(runtime.settings, sock):
                report(f"listener: {url} (signed callbacks, real HTTP)")
                order_id = _shop(runtime, report)
                _charge(runtime, order_id, report)
                _wait_until_paid(runtime, order_id)
                report("callback: the simulator's signed outcome settled the payment")
                _deliver(runtime, order_id, report)
            from orderpay.store.orders import get_order_detail

            with runtime.database.transaction() as conn:
                return get_order_detail(conn, order_id)
        finally:
            runtime.close()


def refuse_if_in_use(database: Database) -> None:
    """DatabaseNotEmpty when any orderpay table of `database` holds a row."""
    from sqlalchemy import inspect, select

    from orderpay.store.schema import metadata

    with database.transaction() as conn:
        present = set(inspect(conn).get_table_names())
        used = [
            table.name
            for table in metadata.sorted_tables
            if table.name in present and conn.execute(select(1).select_from(table).limit(1)).first()
        ]
    if used:
        raise DatabaseNotEmpty(
            f"{database.label} already holds orderpay data (in {', '.join(sorted(used))}); the "
            "demo adds a made-up customer, order and payment, so give --database-url an empty "
            "database, or leave it out to use a throwaway one"
        )


def _shop(runtime: Runtime, report: Report) -> uuid.UUID:
    from orderpay.shop.customers import create_customer
    from orderpay.shop.orders import create_order
    from orderpay.shop.products import create_product

    with runtime.database.transaction() as conn:
        customer = create_customer(
            conn,
            name="Ama Mensah",
            phone="024 123 4567",
            email="ama@example.com",
            default_region=runtime.settings.default_region,
        )
        kenkey = create_product(conn, name="Kenkey and fish", price="35.00", currency="GHS")
        sobolo = create_product(conn, name="Sobolo (1 l)", price="12.50", currency="GHS")
        order = create_order(conn, customer_id=customer.id, items=[(kenkey.id, 2), (sobolo.id, 1)])
    report(f"order: {order.id} for {customer.name} ({customer.phone}), total {order.total}")
    return order.id


def _charge(runtime: Runtime, order_id: uuid.UUID, report: Report) -> None:
    from orderpay.payments.charge import charge_order

    key = f"demo-{order_id}"
    result = charge_order(
        runtime.database,
        runtime.provider,
        order_id=order_id,
        key=key,
        payer_phone=None,
        default_region=runtime.settings.default_region,
        lease_seconds=runtime.settings.charge_lease_seconds,
    )
    report(f"charge: payment {result.payment.id} {result.payment.status} (key {key})")


def _wait_until_paid(runtime: Runtime, order_id: uuid.UUID) -> None:
    from orderpay.domain.states import OrderStatus
    from orderpay.store.orders import get_order

    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with runtime.database.transaction() as conn:
            if get_order(conn, order_id).status is OrderStatus.PAID:
                return
        time.sleep(0.05)
    raise Unavailable("the simulator's callback did not settle the payment in time")


def _deliver(runtime: Runtime, order_id: uuid.UUID, report: Report) -> None:
    from orderpay.domain.states import NotificationStatus
    from orderpay.notify.drain import Drain
    from orderpay.store.notifications import list_notifications
    from orderpay.store.paging import Window

    settings = runtime.settings
    results = Drain(
        runtime.database, runtime.channel_for, runtime.retry_policy, settings.merchant_name
    ).drain_due()
    report(f"worker: {len(results)} notification(s) delivered from the database")
    with runtime.database.transaction() as conn:
        unsent = list_notifications(
            conn, Window(), status=NotificationStatus.PENDING, order_id=order_id
        ).items
    if unsent:
        raise OrderpayError("the demo's notification was not sent; see the log above")
