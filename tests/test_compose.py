"""The container setup, checked by reading: docker-compose.yml against the Compose Specification's
JSON Schema (a copy in tests/data, so a clean clone needs nothing else), and the Dockerfile's
final stage. No Docker engine is needed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

APP_SERVICES = ("migrate", "webhooks", "worker")
BACKING_SERVICES = ("postgres", "redis")
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
# ${NAME} or ${NAME:?message} / ${NAME?message}: taken from .env, with no default to fall back on.
REQUIRED_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}")
INTERPOLATED_NAME = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
URL_CREDENTIALS = re.compile(r"://[^/\s:@]+:(?P<password>[^/\s@]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def environment_of(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's `environment`, in either of its two spellings (mapping or KEY=VALUE list)."""
    raw = service.get("environment") or {}
    if isinstance(raw, dict):
        return {key: None if value is None else str(value) for key, value in raw.items()}
    pairs = (item.split("=", 1) for item in raw)
    return {pair[0]: pair[1] if len(pair) == 2 else None for pair in pairs}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name -> condition (the short list form means service_started)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec["condition"] for name, spec in raw.items()}


def final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuations joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    instructions = [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in logical)
    ]
    starts = [index for index, (name, _) in enumerate(instructions) if name == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    errors = sorted(Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_file_uses_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_the_stack_has_postgres_redis_migrate_webhooks_and_worker(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(BACKING_SERVICES + APP_SERVICES) <= set(services)


def test_app_services_share_one_image_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    images = {services[name].get("image") for name in APP_SERVICES}
    builds = {json.dumps(services[name].get("build"), sort_keys=True) for name in APP_SERVICES}
    assert len(images) == 1
    assert None not in images
    assert len(builds) == 1
    assert "null" not in builds


def test_migrate_runs_db_upgrade_once_after_postgres_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    migrate = services["migrate"]
    assert command_of(migrate) == ["db", "upgrade"]
    assert str(migrate.get("restart")) == "no"
    assert depends_on(migrate).get("postgres") == "service_healthy"


def test_long_running_app_services_wait_for_migrations_to_complete(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("webhooks", "worker"):
        assert depends_on(services[name]).get("migrate") == "service_completed_successfully", name


def test_postgres_and_redis_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    postgres_test = services["postgres"]["healthcheck"]["test"]
    redis_test = services["redis"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(postgres_test if isinstance(postgres_test, list) else [])
    assert "redis-cli ping" in " ".join(redis_test if isinstance(redis_test, list) else [])


def test_services_that_depend_on_postgres_or_redis_wait_until_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    waits = {
        (name, dependency): condition
        for name, service in services.items()
        for dependency, condition in depends_on(service).items()
        if dependency in BACKING_SERVICES
    }
    assert ("worker", "redis") in waits
    assert ("migrate", "postgres") in waits
    assert set(waits.values()) == {"service_healthy"}, waits


def test_webhooks_serves_on_port_8000_and_is_health_checked_on_healthz(
    services: dict[str, dict[str, Any]],
) -> None:
    webhooks = services["webhooks"]
    assert command_of(webhooks) == ["serve-webhooks", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000:8000" in [str(port) for port in webhooks["ports"]]
    check = " ".join(webhooks["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in check
    assert "urllib" in check  # python:3.11-slim has no curl


def test_worker_runs_the_worker_command(services: dict[str, dict[str, Any]]) -> None:
    assert command_of(services["worker"]) == ["worker"]


def test_worker_has_a_stop_grace_period_to_finish_its_job(
    services: dict[str, dict[str, Any]],
) -> None:
    period = str(services["worker"].get("stop_grace_period", ""))
    match = re.fullmatch(r"(\d+)(s|m)", period)
    assert match, f"stop_grace_period {period!r}"
    seconds = int(match[1]) * (60 if match[2] == "m" else 1)
    assert seconds >= 30


def test_no_secret_is_written_literally_in_an_environment_value(
    services: dict[str, dict[str, Any]],
) -> None:
    literal = {
        (name, key): value
        for name, service in services.items()
        for key, value in environment_of(service).items()
        if any(word in key.upper() for word in SECRET_WORDS)
        and value is not None
        and not REQUIRED_INTERPOLATION.fullmatch(value)
    }
    assert not literal, f"put these in .env and interpolate them: {sorted(literal)}"


def test_no_url_in_an_environment_value_embeds_a_password(
    services: dict[str, dict[str, Any]],
) -> None:
    embedded = [
        (name, key)
        for name, service in services.items()
        for key, value in environment_of(service).items()
        for match in URL_CREDENTIALS.finditer(value or "")
        if not REQUIRED_INTERPOLATION.fullmatch(match["password"])
    ]
    assert not embedded


def test_every_variable_the_compose_file_interpolates_is_in_env_example() -> None:
    interpolated = set(INTERPOLATED_NAME.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert interpolated
    assert interpolated <= documented, sorted(interpolated - documented)


def test_every_setting_the_app_reads_is_documented_in_env_example() -> None:
    from orderpay.config import SETTINGS

    names = {setting.variable for setting in SETTINGS.values()}
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert names
    assert names <= documented, sorted(names - documented)


def test_dockerfile_final_stage_runs_as_a_fixed_non_root_user() -> None:
    users = [arguments.split(":")[0].strip() for name, arguments in final_stage() if name == "USER"]
    assert users, "the final stage sets no USER, so it runs as root"
    assert users[-1] not in {"root", "0"}


def test_dockerfile_entrypoint_is_orderpay_serving_webhooks_by_default() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["orderpay"]
    assert json.loads(stage["CMD"]) == ["serve-webhooks", "--host", "0.0.0.0", "--port", "8000"]


def test_dockerfile_final_stage_installs_no_build_tools() -> None:
    commands = " ".join(arguments for name, arguments in final_stage() if name == "RUN")
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "pip install"):
        assert tool not in commands, tool
