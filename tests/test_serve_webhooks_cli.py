"""`orderpay serve-webhooks` and `orderpay webhook sign|simulate` (DESIGN.md section 8).

Starting, logging and stopping are tested on the real command in a child process; signing and
simulating run the CLI in-process against a listener under a real uvicorn server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from orderpay.cli import app
from orderpay.commands.listener import MAX_DEFAULT_WORKERS
from orderpay.domain.signatures import verify
from orderpay.domain.states import OrderStatus, PaymentStatus
from orderpay.store.db import Database
from orderpay.store.orders import get_order
from orderpay.store.payments import get_payment
from tests.builders import an_order
from tests.conftest import Cli
from tests.http_recorder import Answer, Recorded, recording_server
from tests.live_server import (
    API_TOKEN,
    SECRET,
    a_pending_payment,
    callback_body,
    free_port,
    listener,
    listener_settings,
    serve_webhooks,
    signed,
)
from tests.user_shell import orderpay

SHORT_SECRET = "short-secret-31-characters-long"  # one character below the minimum
PLACEHOLDER = "change-me-webhook-secret-long-enough-but-published"  # refused for its prefix
ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def run_serve_webhooks(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command; a listener that starts when it should refuse times out the test."""
    return subprocess.run(
        [sys.executable, "-m", "orderpay", "serve-webhooks", "--port", str(free_port())],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


# Starting


@pytest.mark.parametrize(
    "secret", [None, "", "  ", ",,"], ids=["unset", "empty", "blank", "commas"]
)
@pytest.mark.slow
def test_serve_webhooks_refuses_to_start_without_a_callback_secret(
    secret: str | None, sqlite_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": sqlite_url}
    if secret is not None:
        env["MOMO_WEBHOOK_SECRET"] = secret

    finished = run_serve_webhooks(env, tmp_path)

    assert finished.returncode == 2
    assert "MOMO_WEBHOOK_SECRET is not set" in finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"MOMO_WEBHOOK_SECRET": PLACEHOLDER},
            "MOMO_WEBHOOK_SECRET is a change-me placeholder",
        ),
        (
            {"MOMO_WEBHOOK_SECRET": SHORT_SECRET},
            "MOMO_WEBHOOK_SECRET is shorter than 32 characters",
        ),
        (
            {"MOMO_WEBHOOK_SECRET": f"{SECRET},{SHORT_SECRET}"},
            "secret 2 of 2 in MOMO_WEBHOOK_SECRET is shorter than 32 characters",
        ),
        (
            {"MOMO_WEBHOOK_SECRET": SECRET, "ORDERPAY_API_TOKEN": SHORT_SECRET},
            "ORDERPAY_API_TOKEN is shorter than 32 characters",
        ),
        (
            {"MOMO_WEBHOOK_SECRET": SECRET, "ORDERPAY_API_TOKEN": PLACEHOLDER},
            "ORDERPAY_API_TOKEN is a change-me placeholder",
        ),
        (
            {"MOMO_WEBHOOK_SECRET": SECRET, "ORDERPAY_SMS_DLR_TOKEN": SHORT_SECRET},
            "ORDERPAY_SMS_DLR_TOKEN is shorter than 32 characters",
        ),
        (
            {"MOMO_WEBHOOK_SECRET": SECRET, "MPESA_CALLBACK_TOKEN": PLACEHOLDER},
            "MPESA_CALLBACK_TOKEN is a change-me placeholder",
        ),
    ],
    ids=[
        "placeholder",
        "short",
        "one-of-several",
        "short-api-token",
        "api-placeholder",
        "dlr",
        "mpesa-path-token",
    ],
)
@pytest.mark.slow
def test_serve_webhooks_refuses_a_guessable_secret_in_one_line_with_exit_2(
    env: dict[str, str], named: str, sqlite_url: str, tmp_path: Path
) -> None:
    refused = run_serve_webhooks({"DATABASE_URL": sqlite_url, **env}, tmp_path)

    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: guessable secrets: ")
    assert named in line
    assert "ORDERPAY_INSECURE_SECRETS=1" in line
    assert line.endswith("[configuration_error]")
    for value in (PLACEHOLDER, SHORT_SECRET, SECRET):
        assert value not in line
    assert "listening on" not in refused.stdout + refused.stderr


@pytest.mark.slow
def test_serve_webhooks_refuses_the_secret_that_env_example_ships(
    sqlite_url: str, tmp_path: Path
) -> None:
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")  # the first step of the Docker Compose setup

    refused = run_serve_webhooks({"DATABASE_URL": sqlite_url}, tmp_path)

    assert refused.returncode == 2
    assert "MOMO_WEBHOOK_SECRET is a change-me placeholder" in refused.stderr
    assert "listening on" not in refused.stderr


@pytest.mark.slow
def test_serve_webhooks_listens_with_guessable_secrets_when_told_so_with_one_warning(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": sqlite_url,
        "MOMO_WEBHOOK_SECRET": f"{SECRET},{SHORT_SECRET}",
        "ORDERPAY_API_TOKEN": PLACEHOLDER,
        "ORDERPAY_INSECURE_SECRETS": "1",
    }

    with serve_webhooks(tmp_path, env) as server:
        assert httpx.get(server.url + "/healthz").status_code == 200
        log = server.stderr()

    (warning,) = [line for line in log.splitlines() if "guessable" in line]
    assert warning == (
        "warning: ORDERPAY_INSECURE_SECRETS=1: listening with guessable secrets: secret 2 of 2 in "
        "MOMO_WEBHOOK_SECRET is shorter than 32 characters; ORDERPAY_API_TOKEN is a change-me "
        "placeholder"
    )
    for value in (PLACEHOLDER, SHORT_SECRET, SECRET):
        assert value not in log


@pytest.mark.slow
def test_serve_webhooks_listens_without_a_warning_with_secrets_of_32_characters(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": sqlite_url,
        "MOMO_WEBHOOK_SECRET": SHORT_SECRET + "x",
        "ORDERPAY_API_TOKEN": SHORT_SECRET + "y",
    }

    with serve_webhooks(tmp_path, env) as server:
        assert httpx.get(server.url + "/healthz").status_code == 200
        log = server.stderr()

    assert "guessable" not in log
    assert "warning" not in log


@pytest.mark.slow
def test_serve_webhooks_on_a_port_in_use_is_one_line_and_exit_2(
    sqlite_url: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        refused = orderpay(
            tmp_path,
            "serve-webhooks",
            "--port",
            str(port),
            env={"DATABASE_URL": sqlite_url, "MOMO_WEBHOOK_SECRET": SECRET},
        )

    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: the port is in use; stop what listens there "
        "or pass another --port [configuration_error]\n"
    )
    assert "listening on" not in refused.stdout + refused.stderr


@pytest.mark.parametrize("host", ["no-such-host.invalid", "192.0.2.1"], ids=["unknown", "foreign"])
@pytest.mark.slow
def test_serve_webhooks_on_a_host_it_cannot_listen_on_is_one_line_and_exit_2(
    sqlite_url: str, tmp_path: Path, host: str
) -> None:
    refused = orderpay(
        tmp_path,
        "serve-webhooks",
        "--host",
        host,
        "--port",
        str(free_port()),
        env={"DATABASE_URL": sqlite_url, "MOMO_WEBHOOK_SECRET": SECRET},
    )

    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1
    assert f"cannot listen on {host}:" in refused.stderr
    assert "--host" in refused.stderr
    assert "listening on" not in refused.stderr


@pytest.mark.slow
def test_serve_webhooks_with_an_unconfigured_provider_is_one_line_and_exit_2(
    sqlite_url: str, tmp_path: Path
) -> None:
    refused = orderpay(
        tmp_path,
        "serve-webhooks",
        "--port",
        str(free_port()),
        "--workers",
        "2",
        env={"DATABASE_URL": sqlite_url, "MOMO_WEBHOOK_SECRET": SECRET, "ORDERPAY_PROVIDER": "mtn"},
    )

    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1
    assert "MTN_MOMO_BASE_URL" in refused.stderr
    assert "Traceback" not in refused.stderr


# Stopping


@pytest.mark.slow
def test_serve_webhooks_starts_one_worker_per_cpu_by_default(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": sqlite_url, "MOMO_WEBHOOK_SECRET": SECRET}
    expected = min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS)

    with serve_webhooks(tmp_path, env) as server:
        assert httpx.get(server.url + "/healthz").status_code == 200
        server.terminate(timeout=20)

    assert f"with {expected} worker(s)" in server.stderr()


@pytest.mark.slow
def test_serve_webhooks_exits_0_promptly_on_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": sqlite_url, "MOMO_WEBHOOK_SECRET": SECRET}

    with serve_webhooks(tmp_path, env) as server:
        started = time.monotonic()
        code = server.terminate(timeout=10)

    assert code == 0, server.stderr()
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_serve_webhooks_finishes_a_request_in_flight_when_sent_sigterm(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    order = an_order(db)
    answers: list[httpx.Response] = []
    in_flight = threading.Event()

    def slow_provider(_request: Recorded) -> Answer:
        in_flight.set()  # the charge is now waiting on the provider
        return Answer(delay=1.0)

    with recording_server() as provider_side:
        provider_side.answer_with(slow_provider)
        env = {
            "DATABASE_URL": pg_url,
            "MOMO_WEBHOOK_SECRET": SECRET,
            "ORDERPAY_API_TOKEN": API_TOKEN,
            "ORDERPAY_SIMULATOR_CALLBACK_URL": provider_side.url,
        }
        with serve_webhooks(tmp_path, env) as server:
            charge = threading.Thread(
                target=lambda: answers.append(
                    httpx.post(
                        server.url + "/api/payments/charge/",
                        content=json.dumps({"order": str(order.id)}),
                        headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": "k"},
                        timeout=20,
                    )
                )
            )
            charge.start()
            assert in_flight.wait(20)

            server.terminate(timeout=20)
            charge.join(20)

    assert [answer.status_code for answer in answers] == [201]
    assert answers[0].json()["status"] == "pending"


# Logs


@pytest.mark.slow
def test_serve_webhooks_logs_hold_no_secret_token_full_phone_number_or_query_string(
    pg_url: str, db: Database, tmp_path: Path
) -> None:
    payer = "+233201234567"
    order, payment = an_order(db), a_pending_payment(db)
    body = callback_body(payment)
    env = {"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": SECRET, "ORDERPAY_API_TOKEN": API_TOKEN}
    auth = {"Authorization": f"Bearer {API_TOKEN}"}

    with serve_webhooks(tmp_path, env) as server, httpx.Client(base_url=server.url) as http:
        http.post(
            "/api/payments/charge/?api_token=query-secret-value",
            content=json.dumps({"order": str(order.id), "phone": payer}),
            headers={**auth, "Idempotency-Key": "k-1"},
        )
        http.post("/api/webhooks/momo/?sig=query-secret-value", content=body, headers=signed(body))
        http.post("/api/webhooks/momo/", content=b"{}", headers={"X-Momo-Signature": SECRET})
        http.get(f"/api/orders/{order.id}/?token={API_TOKEN}", headers=auth)
        http.get(f"/api/orders/{order.id}/", headers={"Authorization": "Bearer wrong-token-xyz"})
        server.terminate()
        log = server.stderr()

    assert "/api/payments/charge/" in log  # the access log did log the requests
    for leak in (SECRET, API_TOKEN, "wrong-token-xyz", payer, payer[1:], "0201234567"):
        assert leak not in log
    for query in ("query-secret-value", "api_token=", "sig=", "token="):
        assert query not in log


# webhook sign


def test_webhook_sign_prints_the_hex_hmac_of_a_file_that_verify_accepts(tmp_path: Path) -> None:
    body = b'{"provider_reference": "r-1", "status": "success"}\n'
    (tmp_path / "callback.json").write_bytes(body)

    outcome = Cli({"MOMO_WEBHOOK_SECRET": SECRET})("webhook", "sign", "callback.json")

    assert outcome.exit_code == 0
    signature = outcome.stdout.strip()
    assert verify(body, {"x-momo-signature": signature}, [SECRET.encode()]).scheme == "hex"


def test_webhook_sign_reads_the_body_from_stdin_exactly_as_given() -> None:
    body = '{"b": 1,  "a": 2}'  # not canonical: the signature must be of these very bytes

    outcome = CliRunner().invoke(
        app, ["webhook", "sign", "-"], input=body, env={"MOMO_WEBHOOK_SECRET": SECRET}
    )

    assert outcome.exit_code == 0
    signature = outcome.stdout.strip()
    assert verify(body.encode(), {"x-momo-signature": signature}, [SECRET.encode()]).scheme == "hex"


# webhook simulate


def test_webhook_simulate_settles_the_order_through_a_running_listener(
    pg_url: str, db: Database
) -> None:
    payment = a_pending_payment(db)
    cli = Cli({"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": SECRET})

    with listener(listener_settings(pg_url)) as server:
        outcome = cli(
            "webhook",
            "simulate",
            str(payment.order_id),
            "--status",
            "success",
            "--url",
            server.callback_url,
        )

    assert outcome.exit_code == 0, outcome.stderr
    with db.transaction() as conn:
        assert get_payment(conn, payment.id).status is PaymentStatus.SUCCEEDED
        assert get_order(conn, payment.order_id).status is OrderStatus.PAID


def test_webhook_simulate_exits_3_when_the_listener_answers_404(
    pg_url: str, db: Database, sqlite_url: str
) -> None:
    payment = a_pending_payment(db)
    cli = Cli({"DATABASE_URL": pg_url, "MOMO_WEBHOOK_SECRET": SECRET})

    with listener(listener_settings(sqlite_url)) as server:  # a listener that has no such order
        outcome = cli(
            "webhook",
            "simulate",
            str(payment.order_id),
            "--status",
            "success",
            "--url",
            server.callback_url,
        )

    assert outcome.exit_code == 3
    with db.transaction() as conn:
        assert get_payment(conn, payment.id).status is PaymentStatus.PENDING
