"""A fake MTN MoMo API: a real Starlette app served by uvicorn on loopback. Collection is here;
the Disbursement product (refunds) is `mtn.disbursement`, on the same server
(tests/fake_mtn_disbursement.py; what both check alike: tests/fake_mtn_gateway.py).

It enforces what the real gateway requires (reference/specs.md s.3) and reproduces the
*observed* sandbox outcomes by payer MSISDN:

| payer         | status query                                                       |
|---------------|--------------------------------------------------------------------|
| 46733123450   | FAILED / INTERNAL_PROCESSING_ERROR                                 |
| 46733123451   | FAILED / APPROVAL_REJECTED                                         |
| 46733123452   | FAILED / EXPIRED                                                   |
| 46733123453   | PENDING, then FAILED / EXPIRED after `pending_expires_after` s     |
| 46733123454   | CREATED for `created_for` s, then SUCCESSFUL                       |
| anything else | SUCCESSFUL                                                         |

Usage:

    with FakeMtn() as mtn:                      # or FakeMtn(...).start() / .stop()
        provider = mtn.provider()               # an MtnProvider wired to it (close it!)
        env = mtn.env(callback_url=...)         # MTN_MOMO_* variables for CLI tests
        mtn.calls("token"), mtn.calls("requesttopay"), mtn.calls("status")
        mtn.requests                            # every request, in order (Recorded)
        mtn.fail("requesttopay", 500)           # knobs: fail / hang / refuse / late_404 ...
        mtn.unroute("refund")                   # the gateway no longer knows that route
        mtn.release("status")                   # end hangs now (in progress and to come)
        mtn.in_flight("status"), mtn.peak_in_flight("status")  # requests being answered now,
        mtn.peak_in_flight_per_reference("status")             # and the most at once
        mtn.advance(300)                        # move the fake's clock (no sleeping)

The fake's clock only moves outcomes (refunds' too), token expiry and scheduled callbacks;
`advance()` is the way to let time pass in a test.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from orderpay.providers.mtn import DEFAULT_TIMING, MtnProvider
from orderpay.providers.mtn_config import MtnEndpoint, MtnKeys, MtnTiming
from tests.fake_mtn_disbursement import KINDS as DISBURSEMENT_KINDS
from tests.fake_mtn_disbursement import FakeDisbursement
from tests.fake_mtn_gateway import (
    DECIMAL,
    api_call_refused,
    error,
    reference_id,
    token_response,
)

API_USER = "7c9d3a52-4a50-4d7e-9a6f-3b1c1f1d2e10"
API_KEY = "fake-mtn-api-key-0f3e9b"
SUBSCRIPTION_KEY = "fake-mtn-subscription-key-77aa41"
TARGET = "sandbox"

TOKEN_PATH = "/collection/token/"
REQUEST_TO_PAY_PATH = "/collection/v1_0/requesttopay"
STATUS_PATH = "/collection/v1_0/requesttopay/{reference}"
KINDS = {
    "token": TOKEN_PATH,
    "requesttopay": REQUEST_TO_PAY_PATH,
    "status": STATUS_PATH,
    **DISBURSEMENT_KINDS,
}

FAILS_INTERNAL = "46733123450"
REJECTS = "46733123451"
EXPIRES = "46733123452"
ONGOING = "46733123453"
DELAYED = "46733123454"
FIXED_FAILURES = {
    FAILS_INTERNAL: "INTERNAL_PROCESSING_ERROR",
    REJECTS: "APPROVAL_REJECTED",
    EXPIRES: "EXPIRED",
}

CALLBACK_USER_AGENT = "LWAC Http Client 1.0"
_DIGITS = re.compile(r"^\d{5,15}$")


@dataclass(frozen=True)
class Recorded:
    """One request the fake received, and the status it answered."""

    kind: str  # "token", "requesttopay", "status" or "other"
    method: str
    path: str
    headers: dict[str, str]  # lowercase names; a header sent twice keeps its last value
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    kind: str
    status: int | None  # None: answer normally (after `delay`)
    code: str | None
    delay: float
    times: int | None  # None: forever
    html: bool
    process: bool  # do the real work (store the request...) before answering


@dataclass
class Transfer:
    """One request to pay, as MTN stores it."""

    reference: str
    payer: str
    party_id_type: str
    amount: str
    currency: str
    external_id: str
    payer_message: str
    payee_note: str
    callback_url: str | None
    created_at: float  # on the fake's clock
    financial_transaction_id: str
    forced: tuple[str, str | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # merged into status/callback bodies


@dataclass(frozen=True)
class Delivery:
    """One callback the fake sent (status is None when it could not be delivered)."""

    reference: str
    method: str
    url: str
    body: dict[str, Any]
    status: int | None
    error: str | None = None


@dataclass(order=True)
class _Scheduled:
    due: float
    seq: int
    reference: str = field(compare=False)
    method: str = field(compare=False)
    generation: int = field(compare=False)


class FakeMtn:
    """A fake MTN Collection API on a free loopback port, in a background thread."""

    def __init__(
        self,
        *,
        api_user: str = API_USER,
        api_key: str = API_KEY,
        subscription_key: str = SUBSCRIPTION_KEY,
        target_environment: str = TARGET,
        token_expires_in: int = 3600,
        pending_expires_after: float = 300.0,
        created_for: float = 45.0,
        callbacks: bool = True,
        callback_methods: tuple[str, ...] = ("POST",),
        callback_copies: int = 1,
        callback_delay: float = 0.0,
        callback_gap: float = 180.0,
        callback_reference_id: bool = False,
        reason_as_object: bool = False,
        currencies: set[str] | None = None,
        callback_hosts: set[str] | None = None,
    ) -> None:
        self.api_user = api_user
        self.api_key = api_key
        self.subscription_key = subscription_key
        self.target_environment = target_environment
        self.token_expires_in = token_expires_in
        self.pending_expires_after = pending_expires_after
        self.created_for = created_for
        # Callbacks: sent only when the request carried X-Callback-Url, once its outcome is
        # final (SUCCESSFUL or FAILED), `callback_delay` s later on the fake's clock. Each of
        # `callback_copies` rounds sends one request per method in `callback_methods`; rounds
        # are `callback_gap` s apart (MTN was seen delivering twice, 3 min apart).
        self.callbacks = callbacks
        self.callback_methods = callback_methods
        self.callback_copies = callback_copies
        self.callback_delay = callback_delay
        self.callback_gap = callback_gap
        self.callback_reference_id = callback_reference_id
        self.reason_as_object = reason_as_object  # FAILED reason as {"code","message"}
        self.currencies = currencies  # None: any (the real sandbox takes EUR only)
        self.callback_hosts = callback_hosts  # None: any host (the sandbox has an allow-list)

        self._lock = threading.Lock()
        self._offset = 0.0
        self._tokens: dict[str, float] = {}  # token -> expiry on the fake's clock
        self._transfers: dict[str, Transfer] = {}
        self._faults: list[Fault] = []
        self._refused_payers: dict[str, tuple[int, str]] = {}
        self._copies_refused: tuple[int, str] | None = None
        self._late_404: dict[str, int] = {}
        self._unrouted: set[str] = set()
        self._requests: list[Recorded] = []
        self._deliveries: list[Delivery] = []
        self._queue: list[_Scheduled] = []
        self._seq = itertools.count()
        self._wakeup = threading.Condition(self._lock)
        self._closing = False
        self._generation = 0  # bumped by reset(): work from before a reset is dropped
        # Requests being answered right now, per (kind, reference: "" but for status), and
        # the most there ever were at once, per kind and per (kind, reference).
        self._in_flight: Counter[tuple[str, str]] = Counter()
        self._peak_kind: Counter[str] = Counter()
        self._peak_reference: Counter[tuple[str, str]] = Counter()
        self._flight_changed = threading.Condition(self._lock)
        self._released: Counter[str] = Counter()  # bumped by release(kind)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.url = ""
        self._initial = {
            name: copy.copy(value)
            for name, value in vars(self).items()
            if not name.startswith("_") and name != "url"
        }
        # Refunds: the Disbursement product, on the same server (tests/fake_mtn_disbursement.py).
        self.disbursement = FakeDisbursement(self)

    # Lifecycle.

    def start(self) -> FakeMtn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app(),
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
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-mtn", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake MTN server did not start")
            time.sleep(0.005)
        self._sender = threading.Thread(target=self._send_callbacks, name="fake-mtn-callbacks")
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

    def reset(self) -> None:
        """Back to a freshly started fake: same URL and server thread, the constructor's knobs,
        no tokens, requests, faults or scheduled callbacks, the clock back at zero offset.
        In-flight hung requests are cut short and not recorded. Lets one server serve many
        tests (starting is fast; stopping takes ~0.2 s)."""
        with self._lock:
            self._generation += 1
            for name, value in self._initial.items():
                setattr(self, name, copy.copy(value))
            self._offset = 0.0
            self._tokens.clear()
            self._transfers.clear()
            self._faults.clear()
            self._refused_payers.clear()
            self._copies_refused = None
            self._late_404.clear()
            self._unrouted.clear()
            self._requests.clear()
            self._deliveries.clear()
            self._queue.clear()
            self._in_flight.clear()
            self._peak_kind.clear()
            self._peak_reference.clear()
            self._released.clear()
            self.disbursement.reset_locked()
            self._wakeup.notify_all()
            self._flight_changed.notify_all()

    def __enter__(self) -> FakeMtn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Helpers for tests.

    def provider(
        self,
        *,
        callback_url: str | None = None,
        collection: MtnKeys | None = None,
        disbursement: MtnKeys | None = None,
        timing: MtnTiming = DEFAULT_TIMING,
        clock: Callable[[], float] = time.monotonic,
    ) -> MtnProvider:
        """An MtnProvider pointed at this fake, with its credentials (Collection's and
        Disbursement's) unless others are given (the caller closes it)."""
        return MtnProvider(
            MtnEndpoint(self.url, self.target_environment, callback_url),
            collection or self.keys(),
            disbursement=disbursement or self.disbursement.keys(),
            timing=timing,
            clock=clock,
        )

    def keys(self) -> MtnKeys:
        """The Collection credentials this fake accepts."""
        return MtnKeys(
            subscription_key=SecretStr(self.subscription_key),
            api_user=self.api_user,
            api_key=SecretStr(self.api_key),
        )

    def env(self, callback_url: str | None = None, *, refunds: bool = True) -> dict[str, str]:
        """The environment that makes `orderpay` use this fake (with its Disbursement
        credentials unless `refunds=False`)."""
        env = {
            "ORDERPAY_PROVIDER": "mtn",
            "MTN_MOMO_BASE_URL": self.url,
            "MTN_MOMO_SUBSCRIPTION_KEY": self.subscription_key,
            "MTN_MOMO_API_USER": self.api_user,
            "MTN_MOMO_API_KEY": self.api_key,
            "MTN_MOMO_TARGET_ENVIRONMENT": self.target_environment,
            **(self.disbursement.env() if refunds else {}),
        }
        if callback_url:
            env["MTN_MOMO_CALLBACK_URL"] = callback_url
        return env

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def calls(self, kind: str) -> int:
        """How many requests of one kind ("token", "requesttopay", "status", and for refunds
        "disbursement_token", "refund", "refund_status") arrived."""
        with self._lock:
            return sum(1 for r in self._requests if r.kind == kind)

    def counts(self) -> Counter[str]:
        """Requests per route path (the status route as its template)."""
        with self._lock:
            return Counter(KINDS.get(r.kind, r.path) for r in self._requests)

    def last(self, kind: str) -> Recorded:
        with self._lock:
            return next(r for r in reversed(self._requests) if r.kind == kind)

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def transfer(self, reference: str | uuid.UUID) -> Transfer | None:
        with self._lock:
            return self._transfers.get(str(reference))

    def status_body(self, reference: str | uuid.UUID) -> dict[str, Any]:
        """What a status query for this reference answers now (same shape as a callback)."""
        with self._lock:
            return self._body(self._transfers[str(reference)])

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for_deliveries(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.deliveries
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def now(self) -> float:
        return time.monotonic() + self._offset

    def in_flight(self, kind: str, reference: str | uuid.UUID | None = None) -> int:
        """Requests of `kind` (about `reference`, for status) being answered right now."""
        with self._lock:
            return self._count_in_flight(kind, reference)

    def peak_in_flight(self, kind: str) -> int:
        """The most requests of `kind` ever being answered at once (since start or reset)."""
        with self._lock:
            return self._peak_kind[kind]

    def peak_in_flight_per_reference(self, kind: str) -> int:
        """The most requests of `kind` about one and the same reference ever being answered at
        once (status queries name their reference; other kinds count as one reference)."""
        with self._lock:
            return max(
                (peak for (k, _), peak in self._peak_reference.items() if k == kind), default=0
            )

    def wait_for_in_flight(self, kind: str, count: int, timeout: float = 10.0) -> int:
        """Until at least `count` requests of `kind` are being answered at once (a hang holds
        them); the number in flight then, which is less than `count` after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._count_in_flight(kind, None) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._flight_changed.wait(left)
            return self._count_in_flight(kind, None)

    def _count_in_flight(self, kind: str, reference: str | uuid.UUID | None) -> int:
        if reference is not None:
            return self._in_flight[(kind, str(reference))]
        return sum(n for (k, _), n in self._in_flight.items() if k == kind)

    # Knobs.

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass on the fake's clock (outcomes, token expiry, callbacks)."""
        with self._lock:
            self._offset += seconds
            self._wakeup.notify_all()

    def expire_tokens(self) -> None:
        """Every token issued so far, by both products, is now expired (the client's cache
        does not know)."""
        with self._lock:
            now = self.now()
            for token in self._tokens:
                self._tokens[token] = min(self._tokens[token], now - 1)
            self.disbursement.expire_tokens_locked(now)

    def fail(
        self,
        kind: str,
        status: int = 500,
        code: str | None = None,
        *,
        times: int | None = 1,
        html: bool = False,
        process: bool = False,
    ) -> None:
        """The next `times` requests of `kind` get `status` (with {"code"} when `code` is
        given, an HTML page when `html`). `process=True` does the real work first, as when MTN
        took the request but the gateway lost the answer."""
        self._add(Fault(kind, status, code, 0.0, times, html, process))

    def refuse(self, code: str, status: int = 400, *, times: int | None = 1) -> None:
        """The next `times` requests to pay are refused with `status` {"code": code}."""
        self.fail("requesttopay", status, code, times=times)

    def hang(
        self, kind: str, seconds: float, *, times: int | None = 1, process: bool = True
    ) -> None:
        """The next `times` requests of `kind` are answered normally after `seconds` (cut short
        when the fake stops). `process=True` does the work before waiting: MTN took the request
        and the client timed out."""
        self._add(Fault(kind, None, None, seconds, times, False, process))

    def release(self, kind: str) -> None:
        """End the hangs of `kind`: those in progress answer now, those still to come are
        dropped (the gateway is responsive again)."""
        with self._lock:
            self._faults = [f for f in self._faults if not (f.kind == kind and f.status is None)]
            self._released[kind] += 1

    def unroute(self, kind: str) -> None:
        """From now on the gateway answers requests of `kind` as a path it does not know (its
        404, with no MTN error code), as a client calling a wrong path would see; they are still
        recorded under `kind`."""
        if kind not in KINDS:
            raise ValueError(f"unknown route kind {kind!r}; one of {sorted(KINDS)}")
        with self._lock:
            self._unrouted.add(kind)

    def refuse_payer(self, payer: str, code: str, status: int = 400) -> None:
        """Requests to pay from this MSISDN are refused with `status` {"code": code}."""
        with self._lock:
            self._refused_payers[payer.removeprefix("+")] = (status, code)

    def refuse_copies(self, code: str = "NOT_ALLOWED", status: int = 400) -> None:
        """A request to pay sent again under a reference MTN holds is refused with `status`
        {"code": code} instead of 409: MTN checks the payer's open requests first."""
        with self._lock:
            self._copies_refused = (status, code)

    def collected(self) -> dict[str, tuple[Decimal, str]]:
        """What MTN took: the amount and currency of each SUCCESSFUL request, by reference."""
        with self._lock:
            return {
                t.reference: (Decimal(t.amount), t.currency)
                for t in self._transfers.values()
                if self._outcome(t)[0] == "SUCCESSFUL"
            }

    def late_404(self, reference: str | uuid.UUID, polls: int) -> None:
        """The first `polls` status queries for `reference` answer 404 RESOURCE_NOT_FOUND."""
        with self._lock:
            self._late_404[str(reference)] = polls

    def set_status(
        self, reference: str | uuid.UUID, status: str, reason: str | None = None
    ) -> None:
        """Force a stored request's status (e.g. "SUCCESSFUL", or "FAILED" with a reason)."""
        with self._lock:
            self._transfers[str(reference)].forced = (status, reason)

    def patch_body(self, reference: str | uuid.UUID, **fields: Any) -> None:
        """Override fields of the status (and callback) body, e.g. amount="12.5x"."""
        with self._lock:
            self._transfers[str(reference)].extra.update(fields)

    def deliver_callback(
        self,
        reference: str | uuid.UUID,
        *,
        method: str = "POST",
        url: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> int:
        """Send one callback now, synchronously: the current status body (or `body`) to the
        request's X-Callback-Url (or `url`). Returns the listener's HTTP status."""
        with self._lock:
            transfer = self._transfers[str(reference)]
            payload = body if body is not None else self._callback_body(transfer)
            target = url or transfer.callback_url
        if target is None:
            raise ValueError(f"request {reference} carried no X-Callback-Url")
        with httpx.Client(timeout=10) as client:
            response = client.request(
                method, target, json=payload, headers={"User-Agent": CALLBACK_USER_AGENT}
            )
        with self._lock:
            self._deliveries.append(
                Delivery(str(reference), method, target, payload, response.status_code)
            )
        return response.status_code

    def _add(self, fault: Fault) -> None:
        if fault.kind not in KINDS:
            raise ValueError(f"unknown route kind {fault.kind!r}; one of {sorted(KINDS)}")
        with self._lock:
            self._faults.append(fault)

    # The app.

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(TOKEN_PATH, self._endpoint("token", self._token), methods=["POST"]),
                Route(
                    REQUEST_TO_PAY_PATH,
                    self._endpoint("requesttopay", self._request_to_pay),
                    methods=["POST"],
                ),
                Route(STATUS_PATH, self._endpoint("status", self._status), methods=["GET"]),
                *self.disbursement.routes(self._endpoint),
                Route(
                    "/{path:path}",
                    self._endpoint("other", self._unknown),
                    methods=["GET", "POST", "PUT", "DELETE"],
                ),
            ]
        )

    def _endpoint(
        self, kind: str, handler: Callable[[Request, bytes], Response]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            flight = (kind, str(request.path_params.get("reference", "")))
            generation = self._take_off(flight)
            try:
                with self._lock:
                    unrouted = kind in self._unrouted
                fault = None if unrouted else self._take_fault(kind)
                if unrouted:
                    response = self._unknown(request, body)
                elif fault is None:
                    response = handler(request, body)
                else:
                    done = handler(request, body) if fault.process else None
                    await self._sleep(fault.delay, generation, kind)
                    if generation != self._generation:
                        return Response(status_code=503)  # reset while hanging: forget it
                    if fault.status is not None:
                        response = _fault_response(fault)
                    else:
                        response = done or handler(request, body)
            finally:
                self._land(flight, generation)
            headers = {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in request.scope["headers"]
            }
            recorded = Recorded(
                kind, request.method, request.url.path, headers, body, response.status_code
            )
            with self._lock:
                if generation == self._generation:
                    self._requests.append(recorded)
            return response

        return endpoint

    def _take_fault(self, kind: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind:
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _take_off(self, flight: tuple[str, str]) -> int:
        """Count a request as in flight; the generation it belongs to."""
        with self._lock:
            self._in_flight[flight] += 1
            kind = flight[0]
            now_kind = self._count_in_flight(kind, None)
            self._peak_kind[kind] = max(self._peak_kind[kind], now_kind)
            self._peak_reference[flight] = max(
                self._peak_reference[flight], self._in_flight[flight]
            )
            self._flight_changed.notify_all()
            return self._generation

    def _land(self, flight: tuple[str, str], generation: int) -> None:
        with self._lock:
            if generation == self._generation:  # reset() already forgot it otherwise
                self._in_flight[flight] -= 1
                if self._in_flight[flight] <= 0:
                    del self._in_flight[flight]
                self._flight_changed.notify_all()

    async def _sleep(self, seconds: float, generation: int, kind: str) -> None:
        end = time.monotonic() + seconds
        released = self._released[kind]
        while (
            not self._closing
            and generation == self._generation
            and released == self._released[kind]
            and time.monotonic() < end
        ):
            await asyncio.sleep(min(0.02, max(0.0, end - time.monotonic())))

    def _token(self, request: Request, body: bytes) -> Response:
        def issue() -> tuple[str, int]:
            token = secrets.token_urlsafe(32)
            with self._lock:
                self._tokens[token] = self.now() + self.token_expires_in
            return token, self.token_expires_in

        return token_response(
            request,
            subscription_key=self.subscription_key,
            credentials=(self.api_user, self.api_key),
            issue=issue,
        )

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._tokens.get(token)
            return expires is not None and self.now() < expires

    def _check_api_call(self, request: Request) -> Response | None:
        return api_call_refused(
            request,
            subscription_key=self.subscription_key,
            token_valid=self._token_valid,
            target_environment=self.target_environment,
        )

    def _request_to_pay(self, request: Request, body: bytes) -> Response:
        refused = self._check_api_call(request)
        if refused is not None:
            return refused
        reference, bad_reference = reference_id(request)
        if bad_reference is not None:
            return bad_reference
        try:
            data = json.loads(body)
        except ValueError:
            return error(400, "VALIDATION_ERROR", "body is not JSON")
        problem = _body_problem(data)
        if problem:
            return error(400, "VALIDATION_ERROR", problem)
        callback_url = request.headers.get("x-callback-url")
        if callback_url is not None and self.callback_hosts is not None:
            host = httpx.URL(callback_url).host
            if host not in self.callback_hosts:
                return error(400, "INVALID_CALLBACK_URL_HOST", "Callback URL host not allowed")
        if self.currencies is not None and data["currency"] not in self.currencies:
            return error(400, "INVALID_CURRENCY", "Currency not supported.")
        payer = data["payer"]["partyId"]
        with self._lock:
            if reference in self._transfers and self._copies_refused is not None:
                status, code = self._copies_refused
                return error(status, code, f"Payer has an open request: {code}")
            if reference in self._transfers:
                return error(
                    409,
                    "RESOURCE_ALREADY_EXIST",
                    "Duplicated reference id. Creation of resource failed.",
                )
            if payer in self._refused_payers:
                status, code = self._refused_payers[payer]
                return error(status, code, f"Payer refused: {code}")
            transfer = Transfer(
                reference=str(reference),
                payer=payer,
                party_id_type=data["payer"]["partyIdType"],
                amount=data["amount"],
                currency=data["currency"],
                external_id=data["externalId"],
                payer_message=str(data.get("payerMessage", "")),
                payee_note=str(data.get("payeeNote", "")),
                callback_url=callback_url,
                created_at=self.now(),
                financial_transaction_id=str(secrets.randbelow(10**9)).zfill(9),
            )
            self._transfers[transfer.reference] = transfer
            if callback_url and self.callbacks:
                self._schedule(transfer)
        return Response(status_code=202)

    def _status(self, request: Request, body: bytes) -> Response:
        refused = self._check_api_call(request)
        if refused is not None:
            return refused
        reference = request.path_params["reference"]
        with self._lock:
            hidden = self._late_404.get(reference, 0)
            if hidden > 0:
                self._late_404[reference] = hidden - 1
            transfer = self._transfers.get(reference)
            if hidden > 0 or transfer is None:
                return error(404, "RESOURCE_NOT_FOUND", "Requested resource was not found.")
            return JSONResponse(self._body(transfer))

    def _unknown(self, request: Request, body: bytes) -> Response:
        # Azure API Management answers a path no API defines itself, before MTN sees it: no
        # MTN `code`, so a client cannot mistake it for MTN's RESOURCE_NOT_FOUND.
        return JSONResponse({"statusCode": 404, "message": "Resource not found"}, status_code=404)

    # Outcomes (call with the lock held).

    def _outcome(self, transfer: Transfer) -> tuple[str, str | None]:
        if transfer.forced is not None:
            return transfer.forced
        elapsed = self.now() - transfer.created_at
        payer = transfer.payer
        if payer in FIXED_FAILURES:
            return "FAILED", FIXED_FAILURES[payer]
        if payer == ONGOING:
            if elapsed < self.pending_expires_after:
                return "PENDING", None
            return "FAILED", "EXPIRED"
        if payer == DELAYED and elapsed < self.created_for:
            return "CREATED", None
        return "SUCCESSFUL", None

    def _settles_at(self, transfer: Transfer) -> float:
        if transfer.payer == ONGOING:
            return transfer.created_at + self.pending_expires_after
        if transfer.payer == DELAYED:
            return transfer.created_at + self.created_for
        return transfer.created_at

    def _body(self, transfer: Transfer) -> dict[str, Any]:
        status, reason = self._outcome(transfer)
        body: dict[str, Any] = {
            "amount": transfer.amount,
            "currency": transfer.currency,
            "externalId": transfer.external_id,
            "payer": {"partyIdType": transfer.party_id_type, "partyId": transfer.payer},
            "payerMessage": transfer.payer_message,
            "payeeNote": transfer.payee_note,
            "status": status,
        }
        if status == "SUCCESSFUL":
            body["financialTransactionId"] = transfer.financial_transaction_id
        if status == "FAILED" and reason:
            body["reason"] = (
                {"code": reason, "message": reason.replace("_", " ").capitalize()}
                if self.reason_as_object
                else reason
            )
        body.update(transfer.extra)
        return body

    def _callback_body(self, transfer: Transfer) -> dict[str, Any]:
        body = self._body(transfer)
        if self.callback_reference_id:
            body["referenceId"] = transfer.reference
        return body

    # Callbacks, sent from one thread in due order.

    def _schedule(self, transfer: Transfer) -> None:
        first = self._settles_at(transfer) + self.callback_delay
        for round_ in range(self.callback_copies):
            for method in self.callback_methods:
                heapq.heappush(
                    self._queue,
                    _Scheduled(
                        first + round_ * self.callback_gap,
                        next(self._seq),
                        transfer.reference,
                        method,
                        self._generation,
                    ),
                )
        self._wakeup.notify_all()

    def _send_callbacks(self) -> None:
        with httpx.Client(timeout=5) as client:
            while True:
                with self._lock:
                    while not self._closing and (
                        not self._queue or self._queue[0].due > self.now()
                    ):
                        wait = self._queue[0].due - self.now() if self._queue else None
                        self._wakeup.wait(timeout=None if wait is None else min(wait, 0.5))
                    if self._closing:
                        return
                    item = heapq.heappop(self._queue)
                    transfer = self._transfers.get(item.reference)
                    if transfer is None or item.generation != self._generation:
                        continue
                    body = self._callback_body(transfer)
                    url = transfer.callback_url
                if url is None or body["status"] not in ("SUCCESSFUL", "FAILED"):
                    continue
                try:
                    response = client.request(
                        item.method, url, json=body, headers={"User-Agent": CALLBACK_USER_AGENT}
                    )
                    delivery = Delivery(
                        item.reference, item.method, url, body, response.status_code
                    )
                except httpx.HTTPError as failure:
                    delivery = Delivery(
                        item.reference, item.method, url, body, None, type(failure).__name__
                    )
                with self._lock:
                    if item.generation == self._generation:
                        self._deliveries.append(delivery)


def _fault_response(fault: Fault) -> Response:
    assert fault.status is not None
    if fault.html:
        return HTMLResponse(
            f"<html><body><h1>{fault.status}</h1></body></html>", status_code=fault.status
        )
    if fault.code is None:
        return Response(status_code=fault.status)
    return error(fault.status, fault.code, f"Injected failure: {fault.code}")


def _body_problem(data: Any) -> str | None:
    """What is wrong with a requesttopay body, as MTN's validation would see it."""
    if not isinstance(data, dict):
        return "body must be a JSON object"
    amount = data.get("amount")
    if not isinstance(amount, str) or not DECIMAL.fullmatch(amount):
        return "amount must be a decimal string"
    if not isinstance(data.get("currency"), str) or len(data["currency"]) != 3:
        return "currency must be an ISO 4217 code"
    if not isinstance(data.get("externalId"), str):
        return "externalId must be a string"
    payer = data.get("payer")
    if not isinstance(payer, dict) or payer.get("partyIdType") not in (
        "MSISDN",
        "EMAIL",
        "PARTY_CODE",
    ):
        return "payer.partyIdType must be MSISDN, EMAIL or PARTY_CODE"
    party = payer.get("partyId")
    if not isinstance(party, str) or (
        payer["partyIdType"] == "MSISDN" and not _DIGITS.fullmatch(party)
    ):
        return "payer.partyId must be an MSISDN of digits only"
    return None
