"""The callback route's asyncpg pool (store/async_db.py): the URLs the rest accepts, the session
guards of the synchronous listener, no reset round trip on release, and the database's
failures answered as the ordinary path answers them."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from asyncpg.exceptions import DeadlockDetectedError, LockNotAvailableError
from sqlalchemy.engine import make_url

from orderpay.errors import ConcurrentUpdate, ConfigurationError, DatabaseUnavailable
from orderpay.payments.callback_batches import settle_batch
from orderpay.payments.callbacks import parse_callback
from orderpay.store.async_db import asyncpg_dsn, create_pool, translate
from orderpay.store.db import SESSION_GUARDS, Database
from orderpay.store.notifications import NotifyTarget
from tests.live_server import CLOSED_POSTGRES_URL


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_the_pool_accepts_the_postgres_url_forms_the_rest_accepts(scheme: str) -> None:
    url = f"{scheme}://ama:secret@db.example:5433/shop"

    assert asyncpg_dsn(url) == "postgresql://ama:secret@db.example:5433/shop"


def test_the_pool_refuses_a_sqlite_url() -> None:
    with pytest.raises(ConfigurationError):
        asyncpg_dsn("sqlite:///orderpay.db")


async def _session_settings(url: str) -> dict[str, str]:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        return {name: await pool.fetchval(f"SHOW {name}") for name in SESSION_GUARDS}
    finally:
        await pool.close()


@pytest.mark.slow
def test_pool_sessions_get_the_listeners_session_guards(pg_url: str) -> None:
    listener = Database(pg_url, session_guards=True)  # as serve-webhooks makes its engine
    try:
        with listener.transaction() as conn:
            expected = {
                name: conn.exec_driver_sql(f"SHOW {name}").scalar() for name in SESSION_GUARDS
            }
    finally:
        listener.dispose()

    assert run(_session_settings(pg_url)) == expected


async def _setting_after_release(url: str) -> str:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'kept'")
        async with pool.acquire() as conn:  # the same connection: the pool holds one
            return str(await conn.fetchval("SHOW application_name"))
    finally:
        await pool.close()


def test_a_released_connection_is_not_reset(pg_url: str) -> None:
    # asyncpg's default reset (RESET ALL and more) would be a round trip per callback.
    assert run(_setting_after_release(pg_url)) == "kept"


async def _fast_callback_on(url: str) -> Any:
    pool = await create_pool(url, min_size=0, max_size=1)
    try:
        document = {"provider_reference": "r-1", "order_id": str(uuid.uuid4()), "status": "success"}
        callback = parse_callback(json.dumps(document).encode())
        [result] = await settle_batch(pool, [callback], NotifyTarget("log"), label="test db")
        return result
    finally:
        await pool.close()


def test_a_database_that_cannot_be_reached_is_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable) as raised:
        run(_fast_callback_on(CLOSED_POSTGRES_URL))

    assert raised.value.public_message == "database unavailable; retry later"
    assert "test db" in raised.value.message


def test_a_lock_waited_on_too_long_is_database_unavailable() -> None:
    error = LockNotAvailableError("canceling statement due to lock timeout")

    assert isinstance(translate(error, "test db"), DatabaseUnavailable)


def test_a_deadlock_is_a_concurrent_update() -> None:
    assert isinstance(translate(DeadlockDetectedError("deadlock detected"), "db"), ConcurrentUpdate)


def test_an_unknown_order_falls_back_to_the_ordinary_path(pg_url: str) -> None:
    assert run(_fast_callback_on(pg_url)) is None


def test_the_url_keeps_its_password_for_connecting() -> None:
    dsn = asyncpg_dsn("postgresql+psycopg2://ama:s%40cret@db.example/shop")

    assert make_url(dsn).password == "s@cret"
