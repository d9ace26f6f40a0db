"""Which provider collects from a payer: the payer's network, through the configured table
(ORDERPAY_PROVIDER_ROUTES, read by config_rules.route_table). Pure: the network comes from
phonenumbers' carrier data.

A table's keys, most specific first: (region, network) for `KE:Airtel`, (region, "*") for
`RW:*` (every number of a region), ("", network) for `Safaricom` (a network wherever it is).
Network names are phonenumbers' own (`Safaricom`, `MTN`, `Airtel`), casefolded. Carrier data
gives the network a number was issued by: a number that moved keeps its old one, so a
provider's "not a subscriber" answer says to pass `--provider`.
"""

from __future__ import annotations

from orderpay.domain.phones import mask_phone
from orderpay.errors import ConfigurationError, InvalidPhone

ROUTES_VARIABLE = "ORDERPAY_PROVIDER_ROUTES"


def network_of(phone: str) -> tuple[str, str]:
    """(region, network name) of an E.164 number; the network is "" when carrier data has
    none (a fixed line, or a range it does not list)."""
    import phonenumbers
    from phonenumbers import carrier

    try:
        number = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(f"{phone!r} is not a phone number") from None
    region = phonenumbers.region_code_for_number(number) or ""
    return region, carrier.name_for_number(number, "en") or ""


def route(phone: str, table: dict[tuple[str, str], str], default: str) -> str:
    """The provider of a charge to `phone`: `default` when no table is configured, else the
    table's, or a clear error naming the table and `--provider`."""
    if not table:
        return default
    region, network = network_of(phone)
    folded = network.casefold()
    keys = [(region, folded), (region, "*"), ("", folded)] if network else [(region, "*")]
    for key in keys:
        if key in table:
            return table[key]
    named = f"network {network}" if network else "no network in the carrier data"
    raise ConfigurationError(
        f"no provider for payer {mask_phone(phone)} ({named}, region {region or 'unknown'}) in "
        f"{ROUTES_VARIABLE}; add a route for it, or pass --provider",
        region=region,
        network=network,
    )
