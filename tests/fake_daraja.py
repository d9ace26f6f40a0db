"""A fake M-Pesa Daraja API (Safaricom, Kenya): a real Starlette app served by uvicorn on
loopback, strict about what Daraja documents (reference/providers.md, "M-Pesa Daraja").

What it plays: the OAuth token, STK Push and its query, the payer's phone (a prompt per push,
answered from Python or automatically by phone number), STK callbacks and C2B confirmations,
and the two refunds (Reversal, B2C) with Transaction Status, whose results are POSTed to the
ResultURL. It holds the money it moved, so tests compare it with orderpay's records.

Usage:

    with FakeDaraja() as daraja:                 # or FakeDaraja(...).start() / .stop()
        env = daraja.env(callback_url, token)    # MPESA_* settings for orderpay
        # ... orderpay pushes: a prompt opens on the payer's phone
        daraja.prompts("254708374149")           # prompts that phone has seen
        [checkout_id] = daraja.checkout_ids("254708374149")
        daraja.payer_accepts(checkout_id)        # or _cancels, _enters_wrong_pin, ...
        daraja.wait_for_deliveries(1)            # the STK callback, sent from a thread
        daraja.collected(), daraja.reversed(), daraja.paid_out(), daraja.balance()
        daraja.advance(61)                       # the fake's clock: an open prompt times out
        daraja.lose_next_answer("stkpush")       # knobs: fail / spike_arrest / drop_... etc.
        daraja.calls("stkpush"), daraja.last("query"), daraja.requests

    FakeDaraja(auto={"254708374149": "accept"})  # that payer answers every prompt at once

Behaviour worth knowing (each is Daraja's unless marked [fake]):

- Not idempotent: a re-sent identical push prompts the payer again; a re-sent B2C with the
  same OriginatorConversationID pays again. Only "one open prompt per payer" (500.001.1001
  "Unable to lock subscriber") and rule 17 (the same Amount to the same payer within 120 s of
  an earlier push that opened a prompt: accepted, then ResultCode 17 at once) stop repeats.
- The clock [fake]: read from the wall clock when the fake is built (and at `reset()`), then
  moved only by `advance()`. Timestamps are Kenya time (UTC+3) and must be within 5 minutes of
  it; `timestamp()` and `password()` give a valid pair. A prompt nobody answers ends with 1037
  once `advance()` passes `prompt_timeout`.
- A lost answer (`lose_next_answer`) [fake's choice]: the fake does the work, then closes the
  connection without answering, so an httpx client sees `httpx.RemoteProtocolError` ("Server
  disconnected without sending a response") at once rather than after its timeout. The request
  is logged with status None.
- `CallBackURL`, `ResultURL` and `QueueTimeOutURL` must be https, except plain http to
  127.0.0.1 or localhost [fake: so tests can use loopback receivers], and hold none of the
  words mpesa, safaricom, sql, query, exec, cmd (the last two: community reports).
- Outgoing POSTs (STK callbacks, C2B confirmations, refund and status results) leave in order
  from one thread, once each: none is retried, whatever the answer (Daraja does not retry).
  `drop_callbacks`, `duplicate_callbacks`, `callback_headers` and `hold_callbacks` apply to all
  of them, in the order they are produced.
- A C2B confirmation (after `register_c2b`) follows each successful PayBill push; a Till
  (CustomerBuyGoodsOnline) push produces none [fake: C2B URLs are registered per shortcode].
- Transaction Status reports `TransactionStatus` "Completed" (the only value documented) for
  any known receipt, reversed or not; an unknown one gets ResultCode "R000002" [guess].

Guesses where the documentation is silent (keep the client tolerant there): a body that is not
a JSON object gets 400 "400.002.05" "Invalid Request Payload"; a wrong STK password names the
field like the other checks ("Bad Request - Invalid Password"); `fail()` answers 500
"500.003.1001" / 503 "503.003.01"; rule 17 counts only earlier pushes that prompted (not
rule-17 ones); a reversal's or B2C's ResultURL obeys the CallBackURL rules.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import hashlib
import itertools
import json
import re
import secrets
import shutil
import socket
import string
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

CONSUMER_KEY = "fake-daraja-consumer-key-5b1e2c"
CONSUMER_SECRET = "fake-daraja-consumer-secret-9d04aa"
SHORTCODE = "174379"
# The sandbox's published passkey for 174379.
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
INITIATOR_NAME = "testapi"
INITIATOR_PASSWORD = "Safaricom999!*!"
B2C_SHORTCODE = "600000"
KENYA = dt.timezone(dt.timedelta(hours=3), "EAT")

TOKEN_PATH = "/oauth/v1/generate"
STKPUSH_PATH = "/mpesa/stkpush/v1/processrequest"
QUERY_PATH = "/mpesa/stkpushquery/v1/query"
REVERSAL_PATH = "/mpesa/reversal/v1/request"
B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
KINDS = {
    "token": TOKEN_PATH,
    "stkpush": STKPUSH_PATH,
    "query": QUERY_PATH,
    "reversal": REVERSAL_PATH,
    "b2c": B2C_PATH,
    "status": STATUS_PATH,
}

# Payer outcomes: ResultCode and ResultDesc.
PAID = (0, "The service request is processed successfully.")
CANCELLED = (1032, "Request cancelled by user")
WRONG_PIN = (2001, "The initiator information is invalid.")
NO_FUNDS = (1, "The balance is insufficient for the transaction.")
UNREACHABLE = (1037, "DS timeout user cannot be reached")
RULE_LIMITED = (17, "Rule limited.")
AUTO_ACTIONS = {
    "accept": PAID,
    "cancel": CANCELLED,
    "wrong_pin": WRONG_PIN,
    "no_funds": NO_FUNDS,
    "unreachable": UNREACHABLE,
}
RULE_17_WINDOW = 120.0
TIMESTAMP_TOLERANCE = 300.0
ACCEPTED = "Success. Request accepted for processing"
REFUND_ACCEPTED = "Accept the service request successfully."
PAYER_NAME = "JOHN DOE"
SHOP_NAME = "SHOP"

_PHONE = re.compile(r"^2547\d{8}$|^2541\d{8}$")
_TIMESTAMP = re.compile(r"^\d{14}$")
_DIGITS = re.compile(r"^\d+$")
_FORBIDDEN_URL_WORDS = ("mpesa", "safaricom", "sql", "query", "exec", "cmd")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_RECEIPT_CHARS = string.ascii_uppercase + string.digits
_INJECTED = {
    500: ("500.003.1001", "Internal Server Error"),
    503: ("503.003.01", "Service Unavailable"),
}


@dataclass(frozen=True)
class Recorded:
    """One request the fake received, and the status it answered (None: answer lost)."""

    kind: str  # one of KINDS, or "other"
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercase names
    body: bytes
    status: int | None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Checkout:
    """One accepted STK push: the prompt on the payer's phone and how it ended."""

    checkout_id: str
    merchant_request_id: str
    phone: str
    amount: int
    account_reference: str
    transaction_type: str
    party_b: str
    callback_url: str
    body: dict[str, Any]  # the request body as sent
    created_at: float  # on the fake's clock
    prompted: bool  # False for a rule-17 push: no prompt was shown
    state: str = "open"  # "open" (prompt on the phone) or "ended"
    result_code: int | None = None
    result_desc: str | None = None
    receipt: str | None = None
    ended_at: float | None = None


@dataclass(frozen=True)
class Collection:
    checkout_id: str
    phone: str
    amount: int
    account_reference: str


@dataclass(frozen=True)
class Payout:
    originator_conversation_id: str
    phone: str
    amount: int
    receipt: str


@dataclass(frozen=True)
class Delivery:
    """One POST the fake sent: `kind` is "stk", "c2b", "reversal", "b2c" or "status"; status is
    the HTTP status answered, or None with `error` when the request failed."""

    kind: str
    url: str
    body: dict[str, Any]
    status: int | None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Outgoing:
    kind: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    generation: int


@dataclass
class _Refund:
    """A reversal or B2C request accepted and not yet completed."""

    kind: str  # "reversal" or "b2c"
    body: dict[str, Any]
    conversation_id: str
    originator_conversation_id: str
    requested_at: float


class _LostAnswer(Response):
    """Closes the connection instead of answering (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(status_code=599)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle: Any = scope.get("fake_daraja.cycle")
        transport = getattr(cycle, "transport", None)
        if cycle is None or transport is None:  # not served by uvicorn: answer 599 at least
            await Response(status_code=599)(scope, receive, send)
            return
        transport.abort()
        real_receive = cycle.receive
        try:
            async with asyncio.timeout(2):
                while (await real_receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            pass


class FakeDaraja:
    """A fake Daraja API on a free loopback port, in a background thread."""

    def __init__(
        self,
        *,
        prompt_timeout: float = 60.0,
        auto: dict[str, str] | None = None,
        refunds_complete_at_once: bool = True,
        hashed_msisdn: bool = True,
        token_expires_in: int = 3599,
    ) -> None:
        for phone, action in (auto or {}).items():
            if action not in AUTO_ACTIONS:
                raise ValueError(f"auto[{phone!r}]: {action!r} not one of {sorted(AUTO_ACTIONS)}")
        self.prompt_timeout = prompt_timeout
        self.auto = dict(auto or {})
        self.refunds_complete_at_once = refunds_complete_at_once
        self.hashed_msisdn = hashed_msisdn
        self.token_expires_in = token_expires_in
        self._initial = {
            name: copy.copy(value) for name, value in vars(self).items() if name != "_initial"
        }

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._generation = 0
        self._closing = False
        self._sending = 0  # POSTs on the wire (not cleared by reset: the sender counts down)
        self._clear_locked()

        self._key = _private_key()
        self._certificate_pem = _certificate(self._key)
        self._directory: Path | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.base_url = ""

    def _clear_locked(self) -> None:
        self._now = time.time()
        self._tokens: dict[str, float] = {}
        self._requests: list[Recorded] = []
        self._checkouts: dict[str, Checkout] = {}
        self._prompts: dict[str, int] = {}
        self._not_found: dict[str, int] = {}
        self._collected: dict[str, Collection] = {}
        self._reversed: dict[str, str] = {}
        self._reversed_amounts: dict[str, int] = {}
        self._payouts: list[Payout] = []
        self._refunds: list[_Refund] = []
        self._receipts: set[str] = set()
        self._lose: dict[str, int] = {}
        self._faults: dict[str, list[tuple[int, str, str]]] = {}
        self._c2b_url: str | None = None
        self._drop = 0
        self._copies = 1
        self._extra_headers: dict[str, str] = {}
        self._holding = False
        self._held: list[_Outgoing] = []
        self._queue: list[_Outgoing] = []
        self._deliveries: list[Delivery] = []
        self._dropped: list[Delivery] = []
        self._ids = itertools.count(1)

    # Lifecycle.

    def start(self) -> FakeDaraja:
        self._directory = Path(tempfile.mkdtemp(prefix="fake-daraja-"))
        self.certificate_path.write_bytes(self._certificate_pem)
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that name it, and
        # without it each answer on a kept-alive connection waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._asgi(),
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="none",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-daraja", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake Daraja server did not start")
            time.sleep(0.005)
        with self._lock:
            self._closing = False
        self._sender = threading.Thread(target=self._send_loop, name="fake-daraja-callbacks")
        self._sender.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._closing = True
            self._wakeup.notify_all()
        if self._sender is not None:
            self._sender.join(timeout=10)
            self._sender = None
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def reset(self) -> None:
        """Back to a freshly started fake (same URL, certificate and server thread): the
        constructor's settings, no tokens, pushes, money, knobs or queued POSTs, the clock read
        from the wall again. Lets one server serve many tests."""
        with self._lock:
            self._generation += 1
            for name, value in self._initial.items():
                setattr(self, name, copy.copy(value))
            self._clear_locked()
            self._wakeup.notify_all()
            self._idle.notify_all()

    def __enter__(self) -> FakeDaraja:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Configuration for orderpay and for hand-made requests.

    @property
    def certificate_path(self) -> Path:
        """The PEM certificate (self-signed RSA 2048) whose key the fake keeps; exists while
        the fake runs."""
        if self._directory is None:
            raise RuntimeError("the fake Daraja is not started")
        return self._directory / "daraja-certificate.pem"

    def env(
        self, callback_url: str, callback_token: str, *, refunds: bool = True
    ) -> dict[str, str]:
        """The MPESA_* settings that make orderpay use this fake (with the initiator and the
        certificate for refunds unless `refunds=False`)."""
        env = {
            "MPESA_BASE_URL": self.base_url,
            "MPESA_CONSUMER_KEY": CONSUMER_KEY,
            "MPESA_CONSUMER_SECRET": CONSUMER_SECRET,
            "MPESA_SHORTCODE": SHORTCODE,
            "MPESA_PASSKEY": PASSKEY,
            "MPESA_CALLBACK_URL": callback_url,
            "MPESA_CALLBACK_TOKEN": callback_token,
        }
        if refunds:
            env.update(
                {
                    "MPESA_INITIATOR_NAME": INITIATOR_NAME,
                    "MPESA_INITIATOR_PASSWORD": INITIATOR_PASSWORD,
                    "MPESA_CERTIFICATE": str(self.certificate_path),
                    "MPESA_B2C_SHORTCODE": B2C_SHORTCODE,
                }
            )
        return env

    def now(self) -> float:
        """The fake's clock (seconds since the epoch)."""
        with self._lock:
            return self._now

    def timestamp(self, offset: float = 0.0) -> str:
        """`YYYYMMDDHHmmss` in Kenya time, `offset` seconds from the fake's clock."""
        return _kenya(self.now() + offset)

    @staticmethod
    def password(timestamp: str, shortcode: str = SHORTCODE, passkey: str = PASSKEY) -> str:
        """The STK `Password` for a timestamp: base64(shortcode + passkey + timestamp)."""
        return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()

    def security_credential(self, password: str = INITIATOR_PASSWORD) -> str:
        """`password` encrypted as Daraja wants it (RSA PKCS#1 v1.5 with the certificate)."""
        public = x509.load_pem_x509_certificate(self._certificate_pem).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        return base64.b64encode(public.encrypt(password.encode(), padding.PKCS1v15())).decode()

    # The request log.

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def calls(self, kind: str) -> int:
        """How many requests of `kind` ("token", "stkpush", "query", "reversal", "b2c",
        "status") arrived, answered or not."""
        with self._lock:
            return sum(1 for r in self._requests if r.kind == kind)

    def last(self, kind: str) -> Recorded:
        with self._lock:
            return next(r for r in reversed(self._requests) if r.kind == kind)

    # The payer's phone.

    def prompts(self, phone: str) -> int:
        """How many prompts this phone has been shown."""
        with self._lock:
            return self._prompts.get(phone, 0)

    def checkout_ids(self, phone: str | None = None) -> list[str]:
        """CheckoutRequestIDs of accepted pushes (to `phone`, or all), in order."""
        with self._lock:
            return [c.checkout_id for c in self._checkouts.values() if phone in (None, c.phone)]

    def checkout(self, checkout_id: str) -> Checkout:
        """A copy of one accepted push as the fake holds it."""
        with self._lock:
            return copy.deepcopy(self._checkouts[checkout_id])

    def payer_accepts(self, checkout_id: str) -> str:
        """The payer enters the PIN: ResultCode 0, the money is collected. The receipt."""
        self._answer(checkout_id, PAID)
        receipt = self.checkout(checkout_id).receipt
        assert receipt is not None
        return receipt

    def payer_cancels(self, checkout_id: str) -> None:
        self._answer(checkout_id, CANCELLED)

    def payer_enters_wrong_pin(self, checkout_id: str) -> None:
        self._answer(checkout_id, WRONG_PIN)

    def payer_has_no_funds(self, checkout_id: str) -> None:
        self._answer(checkout_id, NO_FUNDS)

    def payer_unreachable(self, checkout_id: str) -> None:
        self._answer(checkout_id, UNREACHABLE)

    def _answer(self, checkout_id: str, result: tuple[int, str]) -> None:
        with self._lock:
            checkout = self._checkouts.get(checkout_id)
            if checkout is None:
                raise KeyError(f"no push {checkout_id!r}")
            if checkout.state != "open":
                raise ValueError(f"{checkout_id} has no open prompt (ended {checkout.result_code})")
            self._end_locked(checkout, result)

    # Money.

    def collected(self) -> dict[str, Collection]:
        """What payers paid, by M-Pesa receipt (reversed ones included)."""
        with self._lock:
            return dict(self._collected)

    def reversed(self) -> dict[str, str]:
        """Reversed collections: original receipt -> the reversal's receipt."""
        with self._lock:
            return dict(self._reversed)

    def paid_out(self) -> list[Payout]:
        """B2C payments made, in order (a re-sent request appears twice: it paid twice)."""
        with self._lock:
            return list(self._payouts)

    def balance(self) -> int:
        """Collected minus reversed minus paid out, in whole KES."""
        with self._lock:
            return self._balance_locked()

    def _balance_locked(self) -> int:
        return (
            sum(c.amount for c in self._collected.values())
            - sum(self._reversed_amounts.values())
            - sum(p.amount for p in self._payouts)
        )

    # Outgoing POSTs (STK callbacks, C2B confirmations, results).

    def register_c2b(self, confirmation_url: str | None) -> None:
        """Each successful PayBill push also posts a C2B confirmation here (None: stop)."""
        with self._lock:
            self._c2b_url = confirmation_url

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def dropped(self) -> list[Delivery]:
        """The POSTs `drop_callbacks` swallowed (status None)."""
        with self._lock:
            return list(self._dropped)

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        """Until at least `count` POSTs were sent (or `timeout`): all those sent."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._deliveries) < count and time.monotonic() < deadline:
                self._idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            return list(self._deliveries)

    def wait_until_sent(self, timeout: float = 5.0) -> list[Delivery]:
        """Until nothing is queued or being sent (held POSTs do not count): all those sent.
        The way to show that something was *not* sent, without sleeping."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (self._queue or self._sending) and time.monotonic() < deadline:
                self._idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            if self._queue or self._sending:
                raise AssertionError("the fake Daraja is still sending")
            return list(self._deliveries)

    def drop_callbacks(self, n: int) -> None:
        """The next `n` POSTs produced are never sent."""
        with self._lock:
            self._drop = n

    def duplicate_callbacks(self, times: int) -> None:
        """From now on each POST is sent `times` times in a row (1: back to normal)."""
        with self._lock:
            self._copies = times

    def callback_headers(self, headers: dict[str, str]) -> None:
        """Extra headers on every POST from now on (e.g. X-Forwarded-For)."""
        with self._lock:
            self._extra_headers = dict(headers)

    def hold_callbacks(self) -> None:
        """Queue POSTs until `release_callbacks()`."""
        with self._lock:
            self._holding = True

    def release_callbacks(self) -> None:
        with self._lock:
            self._holding = False
            self._queue.extend(self._held)
            self._held.clear()
            self._wakeup.notify_all()

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    # Knobs.

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass on the fake's clock: tokens expire, unanswered prompts time out
        (1037) once `prompt_timeout` has passed."""
        with self._lock:
            self._now += seconds
            for checkout in list(self._checkouts.values()):
                if (
                    checkout.state == "open"
                    and self._now - checkout.created_at >= self.prompt_timeout
                ):
                    self._end_locked(checkout, UNREACHABLE)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired (the client's cache does not know)."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = min(self._tokens[token], self._now - 1)

    def query_not_found_for(self, checkout_id: str, times: int) -> None:
        """The next `times` STK queries for `checkout_id` answer "Invalid CheckoutRequestID"."""
        with self._lock:
            self._not_found[checkout_id] = times

    def lose_next_answer(self, kind: str) -> None:
        """The next request of `kind` is acted on, then its connection is closed unanswered."""
        self._check_kind(kind)
        with self._lock:
            self._lose[kind] = self._lose.get(kind, 0) + 1

    def fail(self, kind: str, status: int = 500, times: int = 1) -> None:
        """The next `times` requests of `kind` get `status` without being acted on."""
        self._check_kind(kind)
        code, message = _INJECTED.get(status, (f"{status}.000.00", "Injected failure"))
        with self._lock:
            self._faults.setdefault(kind, []).extend([(status, code, message)] * times)

    def spike_arrest(self, kind: str, times: int = 1) -> None:
        """The next `times` requests of `kind` get 500 "500.003.02" Spike arrest violation."""
        self._check_kind(kind)
        with self._lock:
            self._faults.setdefault(kind, []).extend(
                [(500, "500.003.02", "Spike arrest violation")] * times
            )

    def complete_refunds(self) -> int:
        """Complete the accepted reversals and B2C payments (when not completed at once):
        their results are POSTed. How many were completed."""
        with self._lock:
            refunds, self._refunds = self._refunds, []
            for refund in refunds:
                self._complete_locked(refund)
            return len(refunds)

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {sorted(KINDS)}")

    # The app.

    def _asgi(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        app = Starlette(
            routes=[
                Route(TOKEN_PATH, self._endpoint("token", self._token), methods=["GET"]),
                Route(STKPUSH_PATH, self._endpoint("stkpush", self._stkpush), methods=["POST"]),
                Route(QUERY_PATH, self._endpoint("query", self._query), methods=["POST"]),
                Route(REVERSAL_PATH, self._endpoint("reversal", self._reversal), methods=["POST"]),
                Route(B2C_PATH, self._endpoint("b2c", self._b2c), methods=["POST"]),
                Route(STATUS_PATH, self._endpoint("status", self._status), methods=["POST"]),
                Route(
                    "/{path:path}",
                    self._endpoint("other", self._unknown),
                    methods=["GET", "POST", "PUT", "DELETE"],
                ),
            ]
        )

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            # uvicorn's request cycle, whose transport a lost answer closes.
            scope["fake_daraja.cycle"] = getattr(receive, "__self__", None)
            await app(scope, receive, send)

        return asgi

    def _endpoint(
        self, kind: str, handler: Callable[[Request, Any], Response]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            with self._lock:
                generation = self._generation
                faults = self._faults.get(kind)
                fault = faults.pop(0) if faults else None
            if fault is not None:
                response: Response = _error(*fault)
            elif kind not in ("token", "other") and not self._authorised(request):
                response = _error(401, "404.001.03", "Invalid Access Token")
            elif request.method == "POST" and kind != "other":
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    response = _error(400, "400.002.05", "Invalid Request Payload")
                else:
                    response = handler(request, data)
            else:
                response = handler(request, None)
            with self._lock:
                if fault is None and self._lose.get(kind, 0) > 0:
                    self._lose[kind] -= 1
                    response = _LostAnswer()
                if generation == self._generation:
                    self._requests.append(
                        Recorded(
                            kind,
                            request.method,
                            request.url.path,
                            request.url.query,
                            {k.lower(): v for k, v in request.headers.items()},
                            raw,
                            None if isinstance(response, _LostAnswer) else response.status_code,
                        )
                    )
            return response

        return endpoint

    def _authorised(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with self._lock:
            expires = self._tokens.get(auth.removeprefix("Bearer "))
            return expires is not None and self._now < expires

    def _token(self, request: Request, data: Any) -> Response:
        if request.query_params.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"errorCode": "400.008.02", "errorMessage": "Invalid grant type passed"},
                status_code=400,
            )
        if _basic_credentials(request.headers.get("authorization", "")) != (
            CONSUMER_KEY,
            CONSUMER_SECRET,
        ):
            return JSONResponse(
                {"errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"},
                status_code=400,
            )
        token = secrets.token_urlsafe(21)
        with self._lock:
            self._tokens[token] = self._now + self.token_expires_in
        return JSONResponse({"access_token": token, "expires_in": str(self.token_expires_in)})

    def _unknown(self, request: Request, data: Any) -> Response:
        return _error(404, "404.001.01", "Resource not found")

    # STK Push and its query.

    def _stk_credentials_problem(self, data: dict[str, Any]) -> str | None:
        """Which of BusinessShortCode, Password, Timestamp is wrong, or None."""
        if str(data.get("BusinessShortCode")) != SHORTCODE:
            return "BusinessShortCode"
        stamp = data.get("Timestamp")
        if not isinstance(stamp, str) or not _TIMESTAMP.fullmatch(stamp):
            return "Timestamp"
        try:
            when = dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=KENYA)
        except ValueError:
            return "Timestamp"
        if abs(when.timestamp() - self.now()) > TIMESTAMP_TOLERANCE:
            return "Timestamp"
        if data.get("Password") != self.password(stamp):
            return "Password"
        return None

    def _stkpush(self, request: Request, data: dict[str, Any]) -> Response:
        problem = self._stk_credentials_problem(data) or _push_problem(data)
        if problem is not None:
            return _invalid(problem)
        phone = str(data["PhoneNumber"])
        amount = _whole_amount(data["Amount"])
        assert amount is not None
        with self._lock:
            if any(c.phone == phone and c.state == "open" for c in self._checkouts.values()):
                return _error(
                    500,
                    "500.001.1001",
                    "Unable to lock subscriber, a transaction is already in process for the "
                    "current subscriber",
                )
            limited = any(
                c.phone == phone
                and c.prompted
                and c.amount == amount
                and self._now - c.created_at < RULE_17_WINDOW
                for c in self._checkouts.values()
            )
            checkout = Checkout(
                checkout_id=self._checkout_id_locked(),
                merchant_request_id=_request_id(),
                phone=phone,
                amount=amount,
                account_reference=data["AccountReference"],
                transaction_type=data["TransactionType"],
                party_b=str(data["PartyB"]),
                callback_url=data["CallBackURL"],
                body=copy.deepcopy(data),
                created_at=self._now,
                prompted=not limited,
            )
            self._checkouts[checkout.checkout_id] = checkout
            if limited:
                self._end_locked(checkout, RULE_LIMITED)
            else:
                self._prompts[phone] = self._prompts.get(phone, 0) + 1
                action = self.auto.get(phone)
                if action is not None:
                    self._end_locked(checkout, AUTO_ACTIONS[action])
        return JSONResponse(
            {
                "MerchantRequestID": checkout.merchant_request_id,
                "CheckoutRequestID": checkout.checkout_id,
                "ResponseCode": "0",
                "ResponseDescription": ACCEPTED,
                "CustomerMessage": ACCEPTED,
            }
        )

    def _query(self, request: Request, data: dict[str, Any]) -> Response:
        problem = self._stk_credentials_problem(data)
        if problem is not None:
            return _invalid(problem)
        checkout_id = data.get("CheckoutRequestID")
        with self._lock:
            hidden = self._not_found.get(str(checkout_id), 0)
            if hidden > 0:
                self._not_found[str(checkout_id)] = hidden - 1
            checkout = self._checkouts.get(str(checkout_id))
            if hidden > 0 or checkout is None:
                return _invalid("CheckoutRequestID")
            if checkout.state == "open":
                return _error(500, "500.001.1001", "The transaction is being processed")
            return JSONResponse(
                {
                    "ResponseCode": "0",
                    "ResponseDescription": "The service request has been accepted successsfully",
                    "MerchantRequestID": checkout.merchant_request_id,
                    "CheckoutRequestID": checkout.checkout_id,
                    "ResultCode": str(checkout.result_code),
                    "ResultDesc": checkout.result_desc,
                }
            )

    def _checkout_id_locked(self) -> str:
        stamp = dt.datetime.fromtimestamp(self._now, KENYA).strftime("%d%m%Y%H%M%S")
        return f"ws_CO_{stamp}{next(self._ids):04d}{secrets.randbelow(10**6):06d}"

    def _receipt_locked(self) -> str:
        while True:
            receipt = secrets.choice(string.ascii_uppercase) + "".join(
                secrets.choice(_RECEIPT_CHARS) for _ in range(9)
            )
            if receipt not in self._receipts:
                self._receipts.add(receipt)
                return receipt

    def _end_locked(self, checkout: Checkout, result: tuple[int, str]) -> None:
        """End a push (its prompt, if any) with `result`; queue its callback (and the C2B
        confirmation of a payment)."""
        checkout.state = "ended"
        checkout.result_code, checkout.result_desc = result
        checkout.ended_at = self._now
        callback: dict[str, Any] = {
            "MerchantRequestID": checkout.merchant_request_id,
            "CheckoutRequestID": checkout.checkout_id,
            "ResultCode": checkout.result_code,
            "ResultDesc": checkout.result_desc,
        }
        if result == PAID:
            receipt = self._receipt_locked()
            checkout.receipt = receipt
            self._collected[receipt] = Collection(
                checkout.checkout_id, checkout.phone, checkout.amount, checkout.account_reference
            )
            callback["CallbackMetadata"] = {
                "Item": [
                    {"Name": "Amount", "Value": float(checkout.amount)},
                    {"Name": "MpesaReceiptNumber", "Value": receipt},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": int(_kenya(self._now))},
                    {"Name": "PhoneNumber", "Value": int(checkout.phone)},
                ]
            }
        self._post_locked("stk", checkout.callback_url, {"Body": {"stkCallback": callback}})
        if (
            result == PAID
            and self._c2b_url is not None
            and checkout.transaction_type == "CustomerPayBillOnline"
        ):
            self._post_locked("c2b", self._c2b_url, self._c2b_body_locked(checkout))

    def _c2b_body_locked(self, checkout: Checkout) -> dict[str, Any]:
        msisdn = (
            hashlib.sha256(checkout.phone.encode()).hexdigest()
            if self.hashed_msisdn
            else checkout.phone
        )
        return {
            "TransactionType": "Pay Bill",
            "TransID": checkout.receipt,
            "TransTime": _kenya(self._now),
            "TransAmount": f"{checkout.amount}.00",
            "BusinessShortCode": SHORTCODE,
            "BillRefNumber": checkout.account_reference,
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": msisdn,
            "FirstName": "JOHN",
        }

    # Refunds and Transaction Status.

    def _initiator_problem(self, data: dict[str, Any], name_field: str) -> str | None:
        if data.get(name_field) != INITIATOR_NAME:
            return name_field
        credential = data.get("SecurityCredential")
        if not isinstance(credential, str):
            return "SecurityCredential"
        try:
            plain = self._key.decrypt(
                base64.b64decode(credential, validate=True), padding.PKCS1v15()
            )
        except ValueError:
            return "SecurityCredential"
        if plain != INITIATOR_PASSWORD.encode():
            return "SecurityCredential"
        return None

    def _reversal(self, request: Request, data: dict[str, Any]) -> Response:
        problem = self._initiator_problem(data, "Initiator") or _reversal_problem(data)
        if problem is not None:
            return _invalid(problem)
        return self._accept_refund("reversal", data, _request_id())

    def _b2c(self, request: Request, data: dict[str, Any]) -> Response:
        problem = self._initiator_problem(data, "InitiatorName") or _b2c_problem(data)
        if problem is not None:
            return _invalid(problem)
        return self._accept_refund("b2c", data, data["OriginatorConversationID"])

    def _accept_refund(self, kind: str, data: dict[str, Any], originator: str) -> Response:
        with self._lock:
            refund = _Refund(
                kind, copy.deepcopy(data), _conversation_id(self._now), originator, self._now
            )
            if self.refunds_complete_at_once:
                self._complete_locked(refund)
            else:
                self._refunds.append(refund)
        return JSONResponse(
            {
                "OriginatorConversationID": refund.originator_conversation_id,
                "ConversationID": refund.conversation_id,
                "ResponseCode": "0",
                "ResponseDescription": REFUND_ACCEPTED,
            }
        )

    def _complete_locked(self, refund: _Refund) -> None:
        body = refund.body
        result: dict[str, Any] = {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": refund.originator_conversation_id,
            "ConversationID": refund.conversation_id,
            "TransactionID": "",
            "ReferenceData": {
                "ReferenceItem": {"Key": "QueueTimeoutURL", "Value": body["QueueTimeOutURL"]}
            },
        }
        amount = _whole_amount(body["Amount"])
        assert amount is not None
        if refund.kind == "reversal":
            original = str(body["TransactionID"])
            collection = self._collected.get(original)
            failure = None
            if collection is None:
                failure = ("R000002", "The OriginalTransactionID is invalid.")
            elif original in self._reversed:
                failure = ("R000001", "The transaction has already been reversed.")
            elif amount != collection.amount:
                failure = ("R000002", "The Amount is invalid.")
            if failure is not None:
                result["ResultCode"], result["ResultDesc"] = failure
                result["TransactionID"] = "0000000000"
            else:
                assert collection is not None
                receipt = self._receipt_locked()
                self._reversed[original] = receipt
                self._reversed_amounts[original] = amount
                result["TransactionID"] = receipt
                result["ResultParameters"] = {
                    "ResultParameter": [
                        {
                            "Key": "DebitAccountBalance",
                            "Value": _utility_balance(self._balance_locked()),
                        },
                        {"Key": "Amount", "Value": float(amount)},
                        {"Key": "TransCompletedTime", "Value": int(_kenya(self._now))},
                        {"Key": "OriginalTransactionID", "Value": original},
                        {"Key": "Charge", "Value": 0.0},
                        {
                            "Key": "CreditPartyPublicName",
                            "Value": f"{collection.phone} - {PAYER_NAME}",
                        },
                        {"Key": "DebitPartyPublicName", "Value": f"{SHORTCODE} - {SHOP_NAME}"},
                    ]
                }
        else:
            receipt = self._receipt_locked()
            phone = str(body["PartyB"])
            self._payouts.append(Payout(refund.originator_conversation_id, phone, amount, receipt))
            result["TransactionID"] = receipt
            funds = float(self._balance_locked())
            result["ResultParameters"] = {
                "ResultParameter": [
                    {"Key": "TransactionAmount", "Value": amount},
                    {"Key": "TransactionReceipt", "Value": receipt},
                    {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
                    {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": 0.0},
                    {"Key": "ReceiverPartyPublicName", "Value": f"{phone} - {PAYER_NAME}"},
                    {
                        "Key": "TransactionCompletedDateTime",
                        "Value": dt.datetime.fromtimestamp(self._now, KENYA).strftime(
                            "%d.%m.%Y %H:%M:%S"
                        ),
                    },
                    {"Key": "B2CUtilityAccountAvailableFunds", "Value": funds},
                    {"Key": "B2CWorkingAccountAvailableFunds", "Value": 0.0},
                ]
            }
        self._post_locked(refund.kind, body["ResultURL"], {"Result": result})

    def _status(self, request: Request, data: dict[str, Any]) -> Response:
        problem = self._initiator_problem(data, "Initiator") or _status_problem(data)
        if problem is not None:
            return _invalid(problem)
        originator = _request_id()
        with self._lock:
            conversation = _conversation_id(self._now)
            result: dict[str, Any] = {
                "ResultType": 0,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "OriginatorConversationID": originator,
                "ConversationID": conversation,
                "TransactionID": "0000000000",
                "ReferenceData": {
                    "ReferenceItem": {"Key": "Occasion", "Value": data.get("Occasion", "")}
                },
            }
            parameters = self._status_parameters_locked(data)
            if parameters is None:
                result["ResultCode"] = "R000002"
                result["ResultDesc"] = "The OriginalTransactionID is invalid."
            else:
                result["ResultParameters"] = {"ResultParameter": parameters}
            self._post_locked("status", data["ResultURL"], {"Result": result})
        return JSONResponse(
            {
                "OriginatorConversationID": originator,
                "ConversationID": conversation,
                "ResponseCode": "0",
                "ResponseDescription": REFUND_ACCEPTED,
            }
        )

    def _status_parameters_locked(self, data: dict[str, Any]) -> list[dict[str, Any]] | None:
        receipt = data.get("TransactionID")
        original = data.get("OriginalConversationID")
        stamp = int(_kenya(self._now))
        collection = self._collected.get(str(receipt)) if receipt else None
        if collection is not None:
            checkout = self._checkouts[collection.checkout_id]
            amount, reason, when = collection.amount, "Pay Bill Online", checkout.ended_at
            debit = f"{collection.phone} - {PAYER_NAME}"
            credit = f"{SHORTCODE} - {SHOP_NAME}"
            conversation = checkout.merchant_request_id
            found = str(receipt)
        else:
            payout = next(
                (
                    p
                    for p in self._payouts
                    if (receipt and p.receipt == receipt)
                    or (original and p.originator_conversation_id == original)
                ),
                None,
            )
            if payout is None:
                return None
            amount, reason, when = payout.amount, "Business Payment to Customer via API", None
            debit = f"{B2C_SHORTCODE} - {SHOP_NAME}"
            credit = f"{payout.phone} - {PAYER_NAME}"
            conversation = payout.originator_conversation_id
            found = payout.receipt
        finalised = int(_kenya(when)) if when is not None else stamp
        return [
            {"Key": "DebitPartyName", "Value": debit},
            {"Key": "CreditPartyName", "Value": credit},
            {"Key": "OriginatorConversationID", "Value": conversation},
            {"Key": "InitiatedTime", "Value": finalised},
            {"Key": "DebitAccountType", "Value": "Utility Account"},
            {"Key": "DebitPartyCharges"},
            {"Key": "TransactionReason"},
            {"Key": "ReasonType", "Value": reason},
            {"Key": "TransactionStatus", "Value": "Completed"},
            {"Key": "FinalisedTime", "Value": finalised},
            {"Key": "Amount", "Value": float(amount)},
            {"Key": "ConversationID", "Value": _conversation_id(self._now)},
            {"Key": "ReceiptNo", "Value": found},
        ]

    # Sending, from one thread, in order.

    def _post_locked(self, kind: str, url: str, body: dict[str, Any]) -> None:
        for _ in range(self._copies):
            outgoing = _Outgoing(
                kind, url, copy.deepcopy(body), dict(self._extra_headers), self._generation
            )
            if self._drop > 0:
                self._drop -= 1
                self._dropped.append(Delivery(kind, url, outgoing.body, None, "dropped"))
            elif self._holding:
                self._held.append(outgoing)
            else:
                self._queue.append(outgoing)
        self._wakeup.notify_all()

    def _send_loop(self) -> None:
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        transport = httpx.HTTPTransport(socket_options=nodelay)
        with httpx.Client(timeout=5, transport=transport) as client:
            while True:
                with self._lock:
                    while not self._closing and not self._queue:
                        self._wakeup.wait(0.5)
                    if self._closing:
                        return
                    item = self._queue.pop(0)
                    self._sending += 1
                try:
                    response = client.post(item.url, json=item.body, headers=item.headers)
                    delivery = Delivery(
                        item.kind, item.url, item.body, response.status_code, None, item.headers
                    )
                except httpx.HTTPError as failure:
                    delivery = Delivery(
                        item.kind, item.url, item.body, None, type(failure).__name__, item.headers
                    )
                with self._lock:
                    self._sending -= 1
                    if item.generation == self._generation:
                        self._deliveries.append(delivery)
                    self._idle.notify_all()


# Validation, as Daraja answers it: 400.002.02 "Bad Request - Invalid <field>".


def _push_problem(data: dict[str, Any]) -> str | None:
    kind = data.get("TransactionType")
    if kind not in ("CustomerPayBillOnline", "CustomerBuyGoodsOnline"):
        return "TransactionType"
    if _whole_amount(data.get("Amount")) is None:
        return "Amount"
    party_a, phone = data.get("PartyA"), data.get("PhoneNumber")
    if (
        not _phone(phone)
        or isinstance(party_a, bool)
        or not isinstance(party_a, (str, int))
        or str(party_a) != str(phone)
    ):
        return "PhoneNumber"
    party_b = data.get("PartyB")
    if kind == "CustomerPayBillOnline" and str(party_b) != SHORTCODE:
        return "PartyB"
    if kind == "CustomerBuyGoodsOnline" and not _DIGITS.fullmatch(str(party_b)):
        return "PartyB"
    if not _url_allowed(data.get("CallBackURL")):
        return "CallBackURL"
    if not _text(data.get("AccountReference"), 12):
        return "AccountReference"
    if not _text(data.get("TransactionDesc"), 13):
        return "TransactionDesc"
    return None


def _reversal_problem(data: dict[str, Any]) -> str | None:
    if data.get("CommandID") != "TransactionReversal":
        return "CommandID"
    if not _text(data.get("TransactionID"), 20):
        return "TransactionID"
    if _whole_amount(data.get("Amount")) is None:
        return "Amount"
    if str(data.get("ReceiverParty")) != SHORTCODE:
        return "ReceiverParty"
    if str(data.get("RecieverIdentifierType")) != "11":
        return "RecieverIdentifierType"
    return _result_urls_problem(data) or _remarks_problem(data)


def _b2c_problem(data: dict[str, Any]) -> str | None:
    if not _text(data.get("OriginatorConversationID"), 100):
        return "OriginatorConversationID"
    if data.get("CommandID") not in ("BusinessPayment", "SalaryPayment", "PromotionPayment"):
        return "CommandID"
    if _whole_amount(data.get("Amount")) is None:
        return "Amount"
    if str(data.get("PartyA")) != B2C_SHORTCODE:
        return "PartyA"
    if not _phone(data.get("PartyB")):
        return "PartyB"
    return _result_urls_problem(data) or _remarks_problem(data)


def _status_problem(data: dict[str, Any]) -> str | None:
    if data.get("CommandID") != "TransactionStatusQuery":
        return "CommandID"
    if not _text(data.get("TransactionID"), 20) and not _text(
        data.get("OriginalConversationID"), 100
    ):
        return "TransactionID"
    if str(data.get("PartyA")) not in (SHORTCODE, B2C_SHORTCODE):
        return "PartyA"
    if str(data.get("IdentifierType")) != "4":
        return "IdentifierType"
    return _result_urls_problem(data) or _remarks_problem(data)


def _result_urls_problem(data: dict[str, Any]) -> str | None:
    for name in ("ResultURL", "QueueTimeOutURL"):
        if not _url_allowed(data.get(name)):
            return name
    return None


def _remarks_problem(data: dict[str, Any]) -> str | None:
    if not _text(data.get("Remarks"), 100):
        return "Remarks"
    occasion = data.get("Occasion")
    if occasion is not None and (not isinstance(occasion, str) or len(occasion) > 100):
        return "Occasion"
    return None


def _whole_amount(value: Any) -> int | None:
    """A JSON integer (or a string of digits) of at least 1; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and value >= 1:
        return value
    return None


def _phone(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (str, int))
        and _PHONE.fullmatch(str(value)) is not None
    )


def _text(value: Any, longest: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= longest


def _url_allowed(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if not parts.hostname:
        return False
    if parts.scheme != "https" and not (
        parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    ):
        return False
    return not any(word in value.lower() for word in _FORBIDDEN_URL_WORDS)


# Small helpers.


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"requestId": _request_id(), "errorCode": code, "errorMessage": message},
        status_code=status,
    )


def _invalid(field_name: str) -> JSONResponse:
    return _error(400, "400.002.02", f"Bad Request - Invalid {field_name}")


def _request_id() -> str:
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(9 * 10**7) + 10**7}-1"


def _conversation_id(now: float) -> str:
    day = dt.datetime.fromtimestamp(now, KENYA).strftime("%Y%m%d")
    return f"AG_{day}_{secrets.token_hex(10)}"


def _kenya(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, KENYA).strftime("%Y%m%d%H%M%S")


def _utility_balance(balance: int) -> str:
    return f"Utility Account|KES|{balance}.00|{balance}.00|0.00|0.00"


def _basic_credentials(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    user, sep, secret = decoded.partition(":")
    return (user, secret) if sep else None


_KEY: rsa.RSAPrivateKey | None = None
_KEY_LOCK = threading.Lock()


def _private_key() -> rsa.RSAPrivateKey:
    """One RSA 2048 key per process (generating one takes a noticeable fraction of a second)."""
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            _KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _KEY


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-daraja")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
