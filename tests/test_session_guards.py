"""The long-running processes bound their Postgres sessions: a lock waited on too long, a
runaway statement and a transaction left open all end, instead of piling up requests behind
them (store.db.SESSION_GUARDS). The CLI's one-shot commands keep Postgres's defaults."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from orderpay.runtime import Runtime
from orderpay.server import create_app
from orderpay.store.db import Database
from tests.live_server import listener_settings

GUARDED = {
    "lock_timeout": "5s",
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "1min",
}


def session_settings(database: Database) -> dict[str, str]:
    with database.transaction() as conn:
        return {name: conn.execute(text(f"SHOW {name}")).scalar_one() for name in GUARDED}


def test_the_listeners_sessions_are_guarded(pg_url: str) -> None:
    runtime = create_app(listener_settings(pg_url)).state.runtime

    try:
        assert session_settings(runtime.raw_database) == GUARDED
    finally:
        runtime.close()


def test_a_worker_runtime_guards_its_sessions(pg_url: str) -> None:
    runtime = Runtime(listener_settings(pg_url))
    runtime.guard_sessions()

    try:
        assert session_settings(runtime.raw_database) == GUARDED
    finally:
        runtime.close()


def test_the_clis_sessions_keep_the_servers_defaults(pg_url: str) -> None:
    runtime = Runtime(listener_settings(pg_url))

    try:
        assert session_settings(runtime.raw_database)["lock_timeout"] == "0"
    finally:
        runtime.close()


def test_guards_cannot_be_added_once_the_database_is_in_use(pg_url: str) -> None:
    runtime = Runtime(listener_settings(pg_url))
    runtime.raw_database  # noqa: B018

    try:
        with pytest.raises(AssertionError):
            runtime.guard_sessions()
    finally:
        runtime.close()
