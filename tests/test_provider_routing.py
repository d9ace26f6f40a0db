"""Which provider collects a charge: the payer's network through ORDERPAY_PROVIDER_ROUTES,
`--provider` over it, and a key used before keeping its own payment's provider."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orderpay.config import load_settings
from orderpay.domain.routing import route
from orderpay.domain.states import PaymentStatus
from orderpay.errors import ConfigurationError, InvalidPhone
from orderpay.payments.charge import ProviderChoice, charge_order
from orderpay.providers.base import Provider
from orderpay.providers.simulator import SimulatorProvider
from orderpay.store.db import Database
from tests.builders import a_key, an_order
from tests.conftest import Cli, count_rows
from tests.fake_mtn import FakeMtn

SAFARICOM = "+254712345678"
AIRTEL_KENYA = "+254733123456"
MTN_GHANA = "+233241234567"
MTN_UGANDA = "+256772123456"
TELECEL_GHANA = "+233201234567"
TABLE = load_settings(ORDERPAY_PROVIDER_ROUTES="Safaricom=mpesa,MTN=mtn").route_table


def test_a_safaricom_number_goes_to_mpesa() -> None:
    assert route(SAFARICOM, TABLE, "simulator") == "mpesa"


def test_an_mtn_number_goes_to_mtn_in_every_region() -> None:
    assert [route(p, TABLE, "simulator") for p in (MTN_GHANA, MTN_UGANDA)] == ["mtn", "mtn"]


def test_a_region_route_beats_a_network_route() -> None:
    table = load_settings(ORDERPAY_PROVIDER_ROUTES="MTN=mtn,UG:*=simulator").route_table
    assert (route(MTN_UGANDA, table, "mpesa"), route(MTN_GHANA, table, "mpesa")) == (
        "simulator",
        "mtn",
    )


def test_a_number_no_route_covers_is_refused_naming_the_table_and_the_flag() -> None:
    with pytest.raises(
        ConfigurationError, match=r"network Telecel.*ORDERPAY_PROVIDER_ROUTES.*--provider"
    ):
        route(TELECEL_GHANA, TABLE, "simulator")


def test_without_routes_every_payer_goes_to_the_default_provider() -> None:
    assert route(AIRTEL_KENYA, {}, "simulator") == "simulator"


@pytest.mark.parametrize(
    ("routes", "said"),
    [
        ("Safaricom", "does not read as NETWORK=PROVIDER"),
        ("Safaricom=paypal", "names provider 'paypal'"),
        ("KEN:Safaricom=mpesa", "does not read as"),
    ],
)
def test_a_routes_table_that_does_not_read_is_refused_naming_the_variable(
    routes: str, said: str
) -> None:
    with pytest.raises(ConfigurationError, match="ORDERPAY_PROVIDER_ROUTES") as refused:
        load_settings(ORDERPAY_PROVIDER_ROUTES=routes)
    assert said in refused.value.message


@pytest.fixture
def made() -> Iterator[dict[str, Provider]]:
    """The providers a test's charges built (one per name, as the runtime keeps them),
    closed after it."""
    built: dict[str, Provider] = {}
    yield built
    for provider in built.values():
        provider.close()


def choice(mtn: FakeMtn, made: dict[str, Provider], explicit: str | None = None) -> ProviderChoice:
    def provider_for(name: str) -> Provider:
        if name not in made:
            made[name] = mtn.provider() if name == "mtn" else SimulatorProvider()
        return made[name]

    return ProviderChoice(provider_for, TABLE, "simulator", explicit)


def test_an_mtn_ghana_payer_is_charged_through_mtn_without_a_flag(
    db: Database, mtn: FakeMtn, made: dict[str, Provider]
) -> None:
    order = an_order(db, phone=MTN_GHANA, currency="EUR")

    payment = charge_order(
        db, choice(mtn, made), order_id=order.id, key=a_key(), default_region="GH", lease_seconds=90
    ).payment

    assert (payment.provider, payment.status) == ("mtn", PaymentStatus.PENDING)
    assert mtn.calls("requesttopay") == 1


def test_the_provider_flag_beats_the_route(
    db: Database, mtn: FakeMtn, made: dict[str, Provider]
) -> None:
    order = an_order(db, phone=MTN_GHANA)

    payment = charge_order(
        db,
        choice(mtn, made, explicit="simulator"),
        order_id=order.id,
        key=a_key(),
        default_region="GH",
        lease_seconds=90,
    ).payment

    assert payment.provider == "simulator"
    assert mtn.calls("requesttopay") == 0


def test_mpesa_refuses_a_payer_it_does_not_serve_before_anything_is_stored(
    db: Database, mtn: FakeMtn
) -> None:
    order = an_order(db, phone=MTN_GHANA, price="100.00", currency="KES", quantity=1)
    before = count_rows(db)

    with pytest.raises(InvalidPhone, match=r"Kenyan mobile numbers.*--provider"):
        charge_order(
            db,
            ProviderChoice(lambda name: SimulatorProvider(), {}, "simulator", "mpesa"),
            order_id=order.id,
            key=a_key(),
            default_region="GH",
            lease_seconds=90,
        )

    assert count_rows(db) == before


def test_a_key_used_before_keeps_its_provider_when_the_routes_change(
    db: Database, mtn: FakeMtn, made: dict[str, Provider]
) -> None:
    order = an_order(db, phone=MTN_GHANA, currency="EUR")
    key = a_key()
    first = charge_order(
        db, choice(mtn, made), order_id=order.id, key=key, default_region="GH", lease_seconds=90
    ).payment
    nothing_routes = ProviderChoice(lambda name: SimulatorProvider(), {("", "x"): "mpesa"}, "x")

    again = charge_order(
        db, nothing_routes, order_id=order.id, key=key, default_region="GH", lease_seconds=90
    )

    assert (again.replayed, again.payment.id, again.payment.provider) == (True, first.id, "mtn")


def test_an_unknown_provider_flag_is_a_usage_error_and_changes_nothing(
    cli: Cli, db: Database
) -> None:
    order = an_order(db)
    before = count_rows(db)

    outcome = cli("charge", str(order.id), "--key", "k-1", "--provider", "paypal", "--json")

    assert outcome.exit_code == 2
    assert "unknown provider 'paypal'" in outcome.error()["message"]
    assert count_rows(db) == before


def test_the_mtn_route_listens_when_a_route_names_mtn(pg_url: str, mtn: FakeMtn) -> None:
    from tests.live_server import listener_client

    env = {**mtn.env(), "ORDERPAY_PROVIDER": "simulator", "ORDERPAY_PROVIDER_ROUTES": "MTN=mtn"}
    settings = load_settings(DATABASE_URL=pg_url, MOMO_WEBHOOK_SECRET="s" * 40, **env)
    hint = {"externalId": "00000000-0000-4000-8000-000000000000", "status": "SUCCESSFUL"}

    with listener_client(settings) as client:
        answer = client.post("/api/webhooks/mtn/", json=hint)

    assert answer.status_code == 200


def test_a_key_used_before_replays_even_where_the_new_route_would_refuse_the_payer(
    db: Database, mtn: FakeMtn, made: dict[str, Provider]
) -> None:
    order = an_order(db, phone=MTN_GHANA, currency="EUR")
    key = a_key()
    first = charge_order(
        db, choice(mtn, made), order_id=order.id, key=key, default_region="GH", lease_seconds=90
    ).payment
    to_mpesa = ProviderChoice(lambda name: SimulatorProvider(), {("GH", "*"): "mpesa"}, "x")

    again = charge_order(
        db, to_mpesa, order_id=order.id, key=key, default_region="GH", lease_seconds=90
    )

    assert (again.replayed, again.payment.id, again.payment.provider) == (True, first.id, "mtn")


def test_an_allow_list_entry_that_is_no_address_is_refused_at_load() -> None:
    with pytest.raises(ConfigurationError, match=r"MPESA_ALLOWED_IPS.*'safaricom'"):
        load_settings(MPESA_ALLOWED_IPS="196.201.214.0/24,safaricom")
