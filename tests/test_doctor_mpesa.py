"""`orderpay doctor` for a Kenyan merchant: the `mpesa` check (settings, a token fetched from
the fake Daraja, the callback URL Daraja would accept, the refund certificate) and the `routes`
check (every provider ORDERPAY_PROVIDER_ROUTES names can be built). Each run is the installed
command; exit 2 for what the operator must fix, 7 for what is down, 0 when all is well."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orderpay.store.db import Database
from orderpay.store.migrate import upgrade
from tests.fake_daraja import CONSUMER_SECRET, FakeDaraja
from tests.user_shell import Run, orderpay

TOKEN = "doctor-path-token-" + "t" * 32
CALLBACK_URL = f"http://127.0.0.1:8000/api/webhooks/daraja/{TOKEN}/"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daraja() -> Iterator[FakeDaraja]:
    with FakeDaraja() as fake:
        yield fake


@pytest.fixture
def env(daraja: FakeDaraja, tmp_path: Path) -> dict[str, str]:
    """A migrated SQLite database and the fake Daraja's settings, M-Pesa as the provider."""
    daraja.reset()
    database = Database(f"sqlite:///{tmp_path / 'orderpay.db'}")
    upgrade(database)
    database.dispose()
    return {
        **daraja.env(CALLBACK_URL, TOKEN),
        "ORDERPAY_PROVIDER": "mpesa",
        "ORDERPAY_DEFAULT_REGION": "KE",
    }


def _doctor(cwd: Path, env: dict[str, str]) -> Run:
    return orderpay(cwd, "doctor", "--json", env=env)


def _checks(run: Run) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in run.json()["checks"]}


def test_a_good_mpesa_set_up_passes_with_a_token_fetched_and_exits_0(
    tmp_path: Path, env: dict[str, str], daraja: FakeDaraja
) -> None:
    run = _doctor(tmp_path, env)

    assert run.exit_code == 0, run.stdout + run.stderr
    mpesa = _checks(run)["mpesa"]
    assert (mpesa["state"], mpesa["failure"]) == ("ok", None)
    assert f"token fetched from {daraja.base_url}" in mpesa["detail"]
    assert "partial ones as B2C payouts" in mpesa["detail"]
    assert daraja.calls("token") == 1
    for secret in (CONSUMER_SECRET, TOKEN, env["MPESA_PASSKEY"]):
        assert secret not in run.stdout + run.stderr


def test_refunds_without_a_b2c_shortcode_are_reversals_only(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env.pop("MPESA_B2C_SHORTCODE")

    run = _doctor(tmp_path, env)

    assert run.exit_code == 0, run.stdout + run.stderr
    assert "reversal of whole payments only" in _checks(run)["mpesa"]["detail"]


def test_a_wrong_consumer_secret_fails_as_configuration_and_exits_2(
    tmp_path: Path, env: dict[str, str]
) -> None:
    run = _doctor(tmp_path, {**env, "MPESA_CONSUMER_SECRET": "not-the-consumer-secret"})

    mpesa = _checks(run)["mpesa"]
    assert run.exit_code == 2
    assert (mpesa["state"], mpesa["failure"]) == ("fail", "configuration")
    assert "MPESA_CONSUMER_SECRET" in mpesa["detail"]
    assert "not-the-consumer-secret" not in run.stdout + run.stderr


def test_daraja_out_of_reach_is_an_outage_and_exits_7(tmp_path: Path, env: dict[str, str]) -> None:
    run = _doctor(tmp_path, {**env, "MPESA_BASE_URL": "http://127.0.0.1:1"})

    mpesa = _checks(run)["mpesa"]
    assert run.exit_code == 7
    assert (mpesa["state"], mpesa["failure"]) == ("fail", "outage")
    assert "could not reach M-Pesa" in mpesa["detail"]


def test_a_callback_url_with_mpesa_in_it_fails_naming_the_word_and_the_token_is_still_asked(
    tmp_path: Path, env: dict[str, str], daraja: FakeDaraja
) -> None:
    url = f"https://shop.example.com/api/webhooks/mpesa/{TOKEN}/"

    run = _doctor(tmp_path, {**env, "MPESA_CALLBACK_URL": url})

    mpesa = _checks(run)["mpesa"]
    assert run.exit_code == 2
    assert (mpesa["state"], mpesa["failure"]) == ("fail", "configuration")
    assert "'mpesa'" in mpesa["detail"]
    assert "/api/webhooks/daraja/TOKEN/" in mpesa["detail"]
    assert "token fetched" in mpesa["detail"]  # the other problems are found in the same run
    assert daraja.calls("token") == 1


def test_every_callback_url_problem_is_listed_at_once(tmp_path: Path, env: dict[str, str]) -> None:
    url = "http://shop.example.com/safaricom/query/callback/"

    run = _doctor(tmp_path, {**env, "MPESA_CALLBACK_URL": url, "MPESA_CALLBACK_TOKEN": "short"})

    detail = _checks(run)["mpesa"]["detail"]
    assert run.exit_code == 2
    assert "must be https" in detail
    assert "'safaricom', 'query'" in detail
    assert "does not hold MPESA_CALLBACK_TOKEN" in detail
    assert "MPESA_CALLBACK_TOKEN is shorter than 32 characters" in detail


def test_a_placeholder_callback_token_fails(tmp_path: Path, env: dict[str, str]) -> None:
    token = "change-me-long-random-token-0123456789"
    url = f"http://127.0.0.1:8000/api/webhooks/daraja/{token}/"

    run = _doctor(tmp_path, {**env, "MPESA_CALLBACK_URL": url, "MPESA_CALLBACK_TOKEN": token})

    assert run.exit_code == 2
    assert "MPESA_CALLBACK_TOKEN is a change-me placeholder" in _checks(run)["mpesa"]["detail"]


def test_an_unset_callback_token_fails_saying_callbacks_would_be_lost(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env.pop("MPESA_CALLBACK_TOKEN")

    run = _doctor(tmp_path, env)

    assert run.exit_code == 2
    assert "MPESA_CALLBACK_TOKEN is not set" in _checks(run)["mpesa"]["detail"]


def test_a_private_callback_host_is_a_warning_when_daraja_is_not_a_local_fake(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # The real sandbox cannot be reached from the tests: the token fails as an outage, and
    # the warning is said beside it.
    url = f"https://10.1.2.3/api/webhooks/daraja/{TOKEN}/"
    env.update({"MPESA_BASE_URL": "https://127.0.0.2.nip.invalid", "MPESA_CALLBACK_URL": url})

    run = _doctor(tmp_path, env)

    mpesa = _checks(run)["mpesa"]
    detail = mpesa["detail"]
    assert run.exit_code == 7
    assert (mpesa["state"], mpesa["failure"]) == ("fail", "outage")
    assert "warning: MPESA_CALLBACK_URL's host 10.1.2.3 is not a public address" in detail


def test_a_private_callback_host_is_fine_with_a_loopback_fake(
    tmp_path: Path, env: dict[str, str]
) -> None:
    run = _doctor(tmp_path, env)  # CALLBACK_URL is on 127.0.0.1, as is the fake

    assert run.exit_code == 0, run.stdout + run.stderr
    assert "warning" not in _checks(run)["mpesa"]["detail"]


def test_an_unreadable_certificate_fails_naming_it_and_exits_2(
    tmp_path: Path, env: dict[str, str]
) -> None:
    missing = tmp_path / "no-such-certificate.cer"

    run = _doctor(tmp_path, {**env, "MPESA_CERTIFICATE": str(missing)})

    mpesa = _checks(run)["mpesa"]
    assert run.exit_code == 2
    assert (mpesa["state"], mpesa["failure"]) == ("fail", "configuration")
    assert f"MPESA_CERTIFICATE: cannot read {missing}" in mpesa["detail"]
    assert "token fetched" in mpesa["detail"]


def test_a_file_that_is_not_a_certificate_fails(tmp_path: Path, env: dict[str, str]) -> None:
    bogus = tmp_path / "bogus.cer"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")

    run = _doctor(tmp_path, {**env, "MPESA_CERTIFICATE": str(bogus)})

    assert run.exit_code == 2
    assert "MPESA_CERTIFICATE is not a certificate" in _checks(run)["mpesa"]["detail"]


def test_missing_mpesa_settings_are_named(tmp_path: Path, env: dict[str, str]) -> None:
    env.pop("MPESA_PASSKEY")

    run = _doctor(tmp_path, env)

    mpesa = _checks(run)["mpesa"]
    assert run.exit_code == 2
    assert mpesa["failure"] == "configuration"
    assert "MPESA_PASSKEY" in mpesa["detail"]


def test_a_bad_allow_list_entry_fails_the_configuration(
    tmp_path: Path, env: dict[str, str]
) -> None:
    run = _doctor(tmp_path, {**env, "MPESA_ALLOWED_IPS": "196.201.214.0/24,safaricom"})

    assert run.exit_code == 2
    detail = _checks(run)["configuration"]["detail"]
    assert "MPESA_ALLOWED_IPS: 'safaricom' is not an IP address" in detail


def test_the_mpesa_check_runs_when_only_a_route_names_mpesa(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env.pop("ORDERPAY_PROVIDER")  # the simulator
    env["ORDERPAY_PROVIDER_ROUTES"] = "Safaricom=mpesa,KE:*=simulator"

    run = _doctor(tmp_path, env)

    checks = _checks(run)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert checks["mpesa"]["state"] == "ok"
    assert checks["routes"]["state"] == "ok"
    assert "safaricom=mpesa" in checks["routes"]["detail"]


def test_a_route_to_a_provider_without_its_settings_fails_naming_them(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env["ORDERPAY_PROVIDER_ROUTES"] = "Safaricom=mpesa,MTN=mtn"

    run = _doctor(tmp_path, env)

    routes = _checks(run)["routes"]
    assert run.exit_code == 2
    assert (routes["state"], routes["failure"]) == ("fail", "configuration")
    assert "mtn: " in routes["detail"]
    assert "MTN_MOMO_BASE_URL" in routes["detail"]
    assert "mpesa:" not in routes["detail"]


def test_a_route_to_mpesa_without_its_settings_fails_both_checks(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'orderpay.db'}")
    upgrade(database)
    database.dispose()

    run = _doctor(tmp_path, {"ORDERPAY_PROVIDER_ROUTES": "Safaricom=mpesa"})

    checks = _checks(run)
    assert run.exit_code == 2
    assert checks["provider"]["state"] == "ok"  # the simulator, for ORDERPAY_PROVIDER
    assert "MPESA_BASE_URL" in checks["routes"]["detail"]
    assert "MPESA_BASE_URL" in checks["mpesa"]["detail"]


def test_an_unreadable_route_table_skips_the_routes_check(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env["ORDERPAY_PROVIDER_ROUTES"] = "Safaricom=mpesa,Airtel"

    run = _doctor(tmp_path, env)

    checks = _checks(run)
    assert run.exit_code == 2
    assert checks["configuration"]["state"] == "fail"
    assert checks["routes"]["state"] == "skipped"
    assert "ORDERPAY_PROVIDER_ROUTES" in checks["routes"]["detail"]
    assert checks["mpesa"]["state"] == "ok"


def test_a_set_up_without_mpesa_has_no_mpesa_or_routes_check(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'orderpay.db'}")
    upgrade(database)
    database.dispose()

    run = _doctor(tmp_path, {})

    assert run.exit_code == 0, run.stdout + run.stderr
    assert not {"mpesa", "routes"} & set(_checks(run))


def test_the_mpesa_line_is_shown_to_a_human(tmp_path: Path, env: dict[str, str]) -> None:
    run = orderpay(tmp_path, "doctor", env={**env, "COLUMNS": "200"})

    assert run.exit_code == 0, run.stdout + run.stderr
    line = next(line for line in run.stdout.splitlines() if line.split()[:1] == ["mpesa"])
    assert "OK: token fetched" in line


def test_daraja_failing_its_token_endpoint_is_an_outage_not_a_configuration_error(
    tmp_path: Path, env: dict[str, str], daraja: FakeDaraja
) -> None:
    daraja.fail("token", 503)

    run = _doctor(tmp_path, env)

    mpesa = _checks(run)["mpesa"]
    assert (mpesa["state"], mpesa["failure"]) == ("fail", "outage")
    assert run.exit_code == 7
