"""`orderpay demo`: the whole flow on a bare machine, run as a user would run it.

The installed command in a fresh directory, with a controlled environment: once bare, and once
on a machine configured for a real shop (DATABASE_URL and REDIS_URL in the environment, a
`.env` copied from `.env.example`). The demo must ignore that configuration: it runs on a
private throwaway SQLite database with no Redis, and leaves the shop's database and Redis as
they were. `--database-url` is the explicit opt-in, refused for a database holding orderpay data.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import create_engine, inspect

from orderpay.store.db import Database
from tests.builders import AMA, an_order
from tests.conftest import count_rows
from tests.redis_helpers import dedicated_redis_db, redis_db_url
from tests.user_shell import orderpay

EXAMPLE_ENV = Path(__file__).resolve().parent.parent / ".env.example"


@dataclass(frozen=True)
class DemoRun:
    exit_code: int
    stdout: str
    stderr: str
    left_in_cwd: list[str]
    left_in_tmp: list[str]


def run_demo(root: Path, *args: str, dotenv: Path | None = None, **env: str) -> DemoRun:
    cwd, tmp = root / "cwd", root / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    if dotenv is not None:
        shutil.copy(dotenv, cwd / ".env")
    done = orderpay(cwd, "demo", *args, env={"TMPDIR": str(tmp), "COLUMNS": "200", **env})
    return DemoRun(
        done.exit_code,
        done.stdout,
        done.stderr,
        sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*")),
        sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")),
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One run of the demo on a bare machine, shared by the tests below."""
    return run_demo(tmp_path_factory.mktemp("demo-bare"))


@pytest.mark.slow
def test_the_demo_exits_0(demo: DemoRun) -> None:
    assert demo.exit_code == 0, demo.stderr


def test_the_demo_shows_the_order_paid(demo: DemoRun) -> None:
    assert re.search(r"status\s+paid", demo.stdout), demo.stdout
    assert re.search(r"│\s*order_paid\s*│", demo.stdout), demo.stdout


def test_the_demo_shows_the_message_sent(demo: DemoRun) -> None:
    assert re.search(r"│\s*log\s*│\s*sent\s*│\s*\+\d+\*+\d{4}\s*│", demo.stdout), demo.stdout
    assert re.search(r"│\s*notification_sent\s*│", demo.stdout), demo.stdout
    assert re.search(rf"message to \{AMA}: \S.*we received your payment", demo.stderr), demo.stderr


def test_the_demo_says_it_runs_on_a_throwaway_sqlite_file(demo: DemoRun) -> None:
    assert re.search(r"database: SQLite file \S*orderpay-demo-\S*/demo\.db", demo.stderr)


def test_the_demo_leaves_no_files_behind(demo: DemoRun) -> None:
    assert demo.left_in_cwd == []
    assert demo.left_in_tmp == []


@pytest.fixture
def shop_redis() -> Iterator[Redis]:
    with dedicated_redis_db() as url:
        client = Redis.from_url(url)
        yield client
        client.close()


def _tables(url: str) -> list[str]:
    engine = create_engine(Database(url).url)
    try:
        with engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_the_demo_ignores_a_configured_database_and_redis(
    tmp_path: Path, empty_pg_url: str, shop_redis: Redis
) -> None:
    redis_url = redis_db_url(shop_redis.connection_pool.connection_kwargs["db"])

    run = run_demo(
        tmp_path, DATABASE_URL=empty_pg_url, REDIS_URL=redis_url, POSTGRES_HOST="127.0.0.1"
    )

    assert run.exit_code == 0, run.stderr
    assert _tables(empty_pg_url) == []  # not migrated, nothing written
    assert shop_redis.dbsize() == 0  # no job, no queue, no worker registration


@pytest.mark.slow
def test_the_demo_ignores_a_dotenv_copied_from_the_example(tmp_path: Path) -> None:
    # The example points at a Postgres database and a Redis that the demo must not touch (the
    # database does not even exist here: using it would fail the demo).
    run = run_demo(tmp_path, dotenv=EXAMPLE_ENV)

    assert run.exit_code == 0, run.stderr
    assert run.left_in_cwd == [".env"]
    assert "SQLite file" in run.stderr


@pytest.mark.slow
def test_the_demo_ignores_invalid_settings(tmp_path: Path) -> None:
    run = run_demo(tmp_path, ORDERPAY_PROVIDER="bogus", ORDERPAY_NOTIFY_CHANNEL="carrier-pigeon")

    assert run.exit_code == 0, run.stderr


@pytest.mark.slow
def test_database_url_opts_in_to_an_empty_database(tmp_path: Path, empty_pg_url: str) -> None:
    run = run_demo(tmp_path, "--database-url", empty_pg_url)

    assert run.exit_code == 0, run.stderr
    rows = count_rows(Database(empty_pg_url))
    assert (rows["customers"], rows["orders"], rows["payments"], rows["notifications"]) == (
        1,
        1,
        1,
        1,
    )


@pytest.mark.slow
def test_database_url_refuses_a_database_holding_orderpay_data(tmp_path: Path, pg_url: str) -> None:
    shop = Database(pg_url)
    an_order(shop)
    before = count_rows(shop)

    run = run_demo(tmp_path, "--database-url", pg_url, "--json")

    assert run.exit_code == 2
    assert '"database_not_empty"' in run.stderr
    assert "already holds orderpay data" in run.stderr
    assert count_rows(shop) == before


@pytest.mark.slow
def test_database_url_refuses_an_unsupported_database(tmp_path: Path) -> None:
    run = run_demo(tmp_path, "--database-url", "mysql://root@127.0.0.1/shop")

    assert run.exit_code == 2
    assert "[configuration_error]" in run.stderr
    assert "Traceback" not in run.stderr
