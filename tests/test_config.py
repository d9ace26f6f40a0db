"""Configuration: environment and ./.env, the database URL rules, secrets kept out of sight.

The autouse `clean_environment` fixture clears orderpay's variables and chdirs to tmp_path, so a
`.env` written to tmp_path is the working directory's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orderpay.config import DEFAULT_DATABASE_URL, load_settings
from orderpay.errors import ConfigurationError
from tests.conftest import Cli

WEBHOOK_SECRET = "whsec-Kenkey-hunter2"
API_TOKEN = "tok-Fufu-s3cr3t"
DB_PASSWORD = "pa55-Banku"

SECRETS = {
    "MOMO_WEBHOOK_SECRET": (WEBHOOK_SECRET, WEBHOOK_SECRET),
    "ORDERPAY_API_TOKEN": (API_TOKEN, API_TOKEN),
    "DATABASE_URL": (f"postgresql+psycopg2://shop:{DB_PASSWORD}@127.0.0.1:1/shop", DB_PASSWORD),
    "POSTGRES_PASSWORD": (DB_PASSWORD, DB_PASSWORD),
    "REDIS_URL": (f"redis://:{DB_PASSWORD}@127.0.0.1:6379/0", DB_PASSWORD),
    "MTN_MOMO_API_KEY": ("mtn-api-key-Waakye", "mtn-api-key-Waakye"),
    "MTN_MOMO_SUBSCRIPTION_KEY": ("mtn-sub-key-Jollof", "mtn-sub-key-Jollof"),
    "MTN_MOMO_DISBURSEMENT_API_KEY": ("mtn-disb-key-Banku", "mtn-disb-key-Banku"),
    "MTN_MOMO_DISBURSEMENT_SUBSCRIPTION_KEY": ("mtn-disb-sub-Fufu", "mtn-disb-sub-Fufu"),
    "ORDERPAY_SMS_API_KEY": ("sms-key-Kelewele", "sms-key-Kelewele"),
    "ORDERPAY_NOTIFY_WEBHOOK_SECRET": ("notify-Shito", "notify-Shito"),
}


def _set_secret(monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    value, secret = SECRETS[name]
    monkeypatch.setenv(name, value)
    if name == "POSTGRES_PASSWORD":
        monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    return secret


def test_database_url_defaults_to_the_embedded_sqlite_file() -> None:
    settings = load_settings()

    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///orderpay.db"


def test_postgres_variables_build_a_postgres_url_when_database_url_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("POSTGRES_PORT", "5433")
    monkeypatch.setenv("POSTGRES_USER", "shop")
    monkeypatch.setenv("POSTGRES_PASSWORD", "pa55")
    monkeypatch.setenv("POSTGRES_DB", "orders")

    settings = load_settings()

    assert settings.database_url == "postgresql+psycopg2://shop:pa55@db.internal:5433/orders"


def test_postgres_variables_without_postgres_host_leave_the_sqlite_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_USER", "shop")
    monkeypatch.setenv("POSTGRES_DB", "orders")

    settings = load_settings()

    assert settings.database_url == DEFAULT_DATABASE_URL


def test_database_url_wins_over_postgres_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///shop.db")
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("POSTGRES_DB", "orders")

    settings = load_settings()

    assert settings.database_url == "sqlite:///shop.db"


def test_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "DATABASE_URL=sqlite:///from-dotenv.db\nORDERPAY_DEFAULT_REGION=ug\n", encoding="utf-8"
    )

    settings = load_settings()

    assert (settings.database_url, settings.default_region) == ("sqlite:///from-dotenv.db", "UG")


def test_environment_beats_the_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")

    settings = load_settings()

    assert settings.database_url == "sqlite:///from-env.db"


def test_dotenv_file_configures_the_cli(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n", encoding="utf-8")

    shown = Cli({}).ok("config", "show")

    assert shown["DATABASE_URL"] == {"value": "sqlite:///from-dotenv.db", "source": ".env"}


def test_default_region_is_ghana() -> None:
    settings = load_settings()

    assert settings.default_region == "GH"


def test_several_webhook_secrets_are_read_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMO_WEBHOOK_SECRET", "old-secret, new-secret")

    settings = load_settings()

    assert settings.webhook_secrets() == [b"old-secret", b"new-secret"]


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_never_appears_in_the_settings_repr(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    secret = _set_secret(monkeypatch, name)

    settings = load_settings()

    assert secret not in repr(settings)
    assert secret not in str(settings)


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_never_appears_in_config_show(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    secret = _set_secret(monkeypatch, name)

    outcome = Cli({})("config", "show")

    assert outcome.exit_code == 0, outcome.stderr
    assert secret not in outcome.stdout + outcome.stderr


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_never_appears_in_config_show_json(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    secret = _set_secret(monkeypatch, name)

    outcome = Cli({})("config", "show", "--json")

    assert outcome.exit_code == 0, outcome.stderr
    assert secret not in outcome.stdout + outcome.stderr


def test_config_show_tells_a_set_secret_from_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMO_WEBHOOK_SECRET", WEBHOOK_SECRET)

    shown = Cli({}).ok("config", "show")

    assert shown["MOMO_WEBHOOK_SECRET"]["value"]
    assert not shown["ORDERPAY_API_TOKEN"]["value"]


def test_config_show_keeps_the_database_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg2://shop:{DB_PASSWORD}@db:5432/shop")

    shown = Cli({}).ok("config", "show")

    assert shown["DATABASE_URL"]["value"].startswith("postgresql+psycopg2://shop:")
    assert shown["DATABASE_URL"]["value"].endswith("@db:5432/shop")


def test_invalid_setting_is_refused_naming_the_variable_but_not_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERPAY_PROVIDER", "bogus")

    with pytest.raises(ConfigurationError) as refused:
        load_settings()

    assert "ORDERPAY_PROVIDER" in refused.value.message
    assert "bogus" not in refused.value.message


def test_invalid_setting_makes_the_cli_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERPAY_PROVIDER", "bogus")

    outcome = Cli({})("config", "show")

    assert outcome.exit_code == 2
    assert "ORDERPAY_PROVIDER" in outcome.stderr
    assert "bogus" not in outcome.stdout + outcome.stderr


def test_invalid_setting_under_json_is_a_configuration_error_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERPAY_PROVIDER", "bogus")

    outcome = Cli({})("customer", "list", "--json")

    assert outcome.exit_code == 2
    assert outcome.error()["code"] == "configuration_error"
    assert "ORDERPAY_PROVIDER" in outcome.error()["message"]


def test_invalid_numeric_setting_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("POSTGRES_PORT", "port-5432x")

    outcome = Cli({})("config", "show")

    assert outcome.exit_code == 2
    assert "POSTGRES_PORT" in outcome.stderr
    assert "port-5432x" not in outcome.stdout + outcome.stderr


def test_unparsable_database_url_exits_2_naming_the_variable_without_echoing_it() -> None:
    outcome = Cli({"DATABASE_URL": f"not-a-url-{DB_PASSWORD}"})("customer", "list", "--json")

    assert outcome.exit_code == 2
    assert "DATABASE_URL" in outcome.error()["message"]
    assert DB_PASSWORD not in outcome.stdout + outcome.stderr


def test_config_show_says_each_value_came_from_the_environment_dotenv_or_a_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("ORDERPAY_DEFAULT_REGION=UG\n", encoding="utf-8")
    monkeypatch.setenv("ORDERPAY_PROVIDER", "simulator")

    shown = Cli({}).ok("config", "show")

    assert shown["ORDERPAY_PROVIDER"] == {"value": "simulator", "source": "environment"}
    assert shown["ORDERPAY_DEFAULT_REGION"] == {"value": "UG", "source": ".env"}
    assert shown["ORDERPAY_NOTIFY_CHANNEL"] == {"value": "log", "source": "default"}


def test_config_show_says_the_environment_won_over_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("ORDERPAY_DEFAULT_REGION=UG\n", encoding="utf-8")
    monkeypatch.setenv("ORDERPAY_DEFAULT_REGION", "KE")

    shown = Cli({}).ok("config", "show")

    assert shown["ORDERPAY_DEFAULT_REGION"] == {"value": "KE", "source": "environment"}


def test_config_show_says_a_database_url_built_from_postgres_variables_came_from_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")

    shown = Cli({}).ok("config", "show")

    assert shown["DATABASE_URL"]["source"] == "POSTGRES_* (environment)"


def test_a_setting_given_as_a_flag_says_so(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n", encoding="utf-8")

    settings = load_settings(DATABASE_URL="sqlite:///from-flag.db")

    assert settings.database_url == "sqlite:///from-flag.db"
    assert settings.public_view()["DATABASE_URL"]["source"] == "flag"


def test_config_show_human_output_has_a_source_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERPAY_PROVIDER", "simulator")

    outcome = Cli({})("config", "show", COLUMNS="120")

    line = next(line for line in outcome.stdout.splitlines() if "ORDERPAY_PROVIDER" in line)
    assert "simulator" in line
    assert "environment" in line


def test_a_rule_between_two_settings_names_the_setting_that_breaks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORDERPAY_NOTIFY_LEASE_SECONDS", "5")

    with pytest.raises(ConfigurationError) as refused:
        load_settings()

    assert refused.value.details["variables"] == ["ORDERPAY_NOTIFY_LEASE_SECONDS"]
    assert "at least ORDERPAY_NOTIFY_TIMEOUT_SECONDS" in refused.value.message
