"""`orderpay doctor`: every check shown, even with an invalid setting; exit 2 for what the
operator must fix (settings, paths, permissions), 7 for what is down, 0 when all is well."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from orderpay.store.db import Database
from orderpay.store.migrate import upgrade
from tests.live_server import (
    a_pending_payment,
    callback_body,
    listener_client,
    listener_settings,
    signed,
)
from tests.user_shell import Run, orderpay

CLOSED_REDIS = "redis://:hunter2-Garri@127.0.0.1:1/3"


def _doctor(cwd: Path, env: dict[str, str] | None = None, **options: Any) -> Run:
    return orderpay(cwd, "doctor", "--json", env=env, **options)


def _checks(run: Run) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in run.json()["checks"]}


def _migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'orderpay.db'}"
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


@pytest.mark.slow
def test_a_healthy_set_up_exits_0_with_every_check_ok(tmp_path: Path) -> None:
    _migrated(tmp_path)

    run = _doctor(tmp_path)

    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.json()["healthy"] is True
    states = {name: check["state"] for name, check in _checks(run).items()}
    assert states == {
        "configuration": "ok",
        "database": "ok",
        "redis": "info",
        "provider": "ok",
        "notify channel": "ok",
        "review queue": "info",
        "callback secret": "info",
        "rest api": "info",
    }


@pytest.mark.slow
def test_an_invalid_setting_still_shows_the_other_checks(tmp_path: Path) -> None:
    _migrated(tmp_path)

    run = _doctor(tmp_path, {"ORDERPAY_NOTIFY_TIMEOUT_SECONDS": "soon"})

    checks = _checks(run)
    assert run.exit_code == 2
    assert checks["configuration"]["state"] == "fail"
    assert "ORDERPAY_NOTIFY_TIMEOUT_SECONDS" in checks["configuration"]["detail"]
    assert checks["database"]["state"] == "ok"
    assert checks["provider"]["state"] == "ok"
    assert checks["notify channel"]["state"] == "skipped"
    assert "ORDERPAY_NOTIFY_TIMEOUT_SECONDS" in checks["notify channel"]["detail"]


@pytest.mark.slow
def test_an_invalid_setting_still_shows_the_table_to_a_human(tmp_path: Path) -> None:
    _migrated(tmp_path)

    run = orderpay(tmp_path, "doctor", env={"ORDERPAY_PROVIDER": "bogus", "COLUMNS": "200"})

    assert run.exit_code == 2
    for name in ("configuration", "database", "redis", "provider", "notify channel"):
        assert name in run.stdout
    assert "FAIL" in run.stdout
    assert "[configuration_error]" in run.stderr


@pytest.mark.slow
def test_an_invalid_database_url_skips_the_database_check_instead_of_checking_another(
    tmp_path: Path,
) -> None:
    _migrated(tmp_path)  # the default SQLite file, which must not be reported instead

    run = _doctor(tmp_path, {"DATABASE_URL": "mysql://shop@127.0.0.1/shop"})

    assert run.exit_code == 2
    assert _checks(run)["database"]["state"] == "skipped"


@pytest.mark.slow
def test_an_unreachable_redis_is_named_with_the_reason_and_exits_7(tmp_path: Path) -> None:
    _migrated(tmp_path)

    run = _doctor(tmp_path, {"REDIS_URL": CLOSED_REDIS})

    redis = _checks(run)["redis"]
    assert run.exit_code == 7
    assert redis["state"] == "fail"
    assert redis["failure"] == "outage"
    assert "cannot reach redis://:***@127.0.0.1:1/3" in redis["detail"]
    assert "Connection refused" in redis["detail"]
    assert "hunter2-Garri" not in run.stdout + run.stderr


@pytest.mark.slow
def test_missing_mtn_settings_are_a_configuration_error_not_an_outage(tmp_path: Path) -> None:
    _migrated(tmp_path)

    run = _doctor(tmp_path, {"ORDERPAY_PROVIDER": "mtn"})

    provider = _checks(run)["provider"]
    assert run.exit_code == 2
    assert provider["failure"] == "configuration"
    assert "MTN_MOMO_BASE_URL" in provider["detail"]


@pytest.mark.slow
def test_a_read_only_database_is_reported_and_exits_2(tmp_path: Path) -> None:
    _migrated(tmp_path)
    database_file = tmp_path / "orderpay.db"
    database_file.chmod(stat.S_IRUSR)
    try:
        run = _doctor(tmp_path, without_root_override=True)
    finally:
        database_file.chmod(stat.S_IRUSR | stat.S_IWUSR)

    database = _checks(run)["database"]
    assert run.exit_code == 2
    assert database["state"] == "fail"
    assert f"{database_file} is read-only" in database["detail"]


@pytest.mark.slow
def test_a_database_that_is_down_is_an_outage(tmp_path: Path) -> None:
    run = _doctor(tmp_path, {"DATABASE_URL": "postgresql://root@127.0.0.1:1/shop"})

    database = _checks(run)["database"]
    assert run.exit_code == 7
    assert database["failure"] == "outage"
    assert "postgresql+psycopg2://root@127.0.0.1:1/shop is unavailable" in database["detail"]


@pytest.mark.slow
def test_a_missing_schema_says_which_database_and_what_to_run(tmp_path: Path) -> None:
    run = _doctor(tmp_path)

    database = _checks(run)["database"]
    assert run.exit_code == 7
    assert f"SQLite file {tmp_path / 'orderpay.db'} has no orderpay schema" in database["detail"]
    assert not (tmp_path / "orderpay.db").exists()


# The review queue: work waiting, said, never a failure


def _an_open_review_item(url: str) -> None:
    """A success reported for another amount than the payment's: kept for review."""
    database = Database(url)
    try:
        payment = a_pending_payment(database)
    finally:
        database.dispose()
    with listener_client(listener_settings(url)) as client:
        body = callback_body(payment, "success", amount="1.00")
        answer = client.post("/api/webhooks/momo/", content=body, headers=signed(body))
    assert answer.json()["status"] == "review"


@pytest.mark.slow
def test_an_empty_review_queue_is_shown_as_0_open(tmp_path: Path) -> None:
    _migrated(tmp_path)

    run = _doctor(tmp_path)

    review = _checks(run)["review queue"]
    assert (review["state"], review["detail"]) == ("info", "0 open")


@pytest.mark.slow
def test_open_review_items_are_counted_and_still_exit_0(tmp_path: Path) -> None:
    url = _migrated(tmp_path)
    _an_open_review_item(url)

    run = _doctor(tmp_path)

    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.json()["healthy"] is True
    review = _checks(run)["review queue"]
    assert review["state"] == "info"
    assert review["detail"].startswith("1 open: see `orderpay review list`")


@pytest.mark.slow
def test_the_review_queue_line_is_shown_to_a_human(tmp_path: Path) -> None:
    url = _migrated(tmp_path)
    _an_open_review_item(url)

    run = orderpay(tmp_path, "doctor", env={"COLUMNS": "80"})

    assert run.exit_code == 0, run.stdout + run.stderr
    line = next(line for line in run.stdout.splitlines() if "review queue" in line)
    assert "INFO: 1 open" in line


@pytest.mark.slow
def test_the_review_queue_is_skipped_when_the_database_is_down(tmp_path: Path) -> None:
    run = _doctor(tmp_path, {"DATABASE_URL": "postgresql://root@127.0.0.1:1/shop"})

    assert _checks(run)["review queue"]["state"] == "skipped"
    assert run.exit_code == 7  # for the database, not for the queue


# Refunds of MTN payments: checked whenever MTN refunds may be asked for

DISBURSEMENT = {
    "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY": "doctor-disbursement-key-41c7",
    "MTN_MOMO_DISBURSEMENT_API_USER": "0d6f1c2a-3b4e-4f5a-8b6c-7d8e9f0a1b2c",
    "MTN_MOMO_DISBURSEMENT_API_KEY": "doctor-disbursement-api-key-93e0",
}


@pytest.mark.slow
def test_a_half_set_disbursement_fails_the_refunds_check_with_the_simulator_as_provider(
    tmp_path: Path,
) -> None:
    # MTN payments made before the switch to the simulator are still refunded through MTN.
    _migrated(tmp_path)
    env = {"MTN_MOMO_DISBURSEMENT_API_USER": DISBURSEMENT["MTN_MOMO_DISBURSEMENT_API_USER"]}

    run = _doctor(tmp_path, env)

    checks = _checks(run)
    assert run.exit_code == 2
    assert checks["provider"]["state"] == "ok"
    refunds = checks["refunds"]
    assert (refunds["state"], refunds["failure"]) == ("fail", "configuration")
    assert "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY" in refunds["detail"]
    assert "MTN_MOMO_DISBURSEMENT_API_KEY" in refunds["detail"]
    assert "MTN_MOMO_DISBURSEMENT_API_USER" not in refunds["detail"]


@pytest.mark.slow
def test_a_full_disbursement_passes_the_refunds_check_with_the_simulator_as_provider(
    tmp_path: Path,
) -> None:
    _migrated(tmp_path)

    run = _doctor(tmp_path, DISBURSEMENT)

    assert run.exit_code == 0, run.stdout + run.stderr
    assert _checks(run)["refunds"]["state"] == "ok"
    for secret in DISBURSEMENT.values():
        assert secret not in run.stdout + run.stderr
