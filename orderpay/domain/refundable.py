"""Whether a payment can be refunded, and how much of it is left to give back. Pure.

Money can go back when the payment's provider took it: the payment succeeded, or an open
finding says the provider took money orderpay did not record. Not while an open finding says
a payment recorded succeeded may have taken nothing: the operator decides first. Whatever a
finding names, a payment's refunds that did not fail never add up to more than it.
"""

from __future__ import annotations

from collections.abc import Iterable

from orderpay.domain.reviews import FindingMoney


def refund_refusal(succeeded: bool, findings: Iterable[str | None]) -> str | None:
    """Why no refund of the payment may be made now (None: it may), from whether it is
    recorded succeeded and what its open findings say of its money (FindingMoney values)."""
    said = set(findings)
    if FindingMoney.MAYBE_NOT_TAKEN.value in said:
        return "held"  # an open finding says no money may have been taken
    if succeeded or FindingMoney.TAKEN.value in said:
        return None
    return "not_taken"  # nothing says its provider took money


def left_to_refund(amount: int, committed: int) -> int:
    """What is left of a payment of `amount` once `committed` (refunds not failed) is out."""
    return max(0, amount - committed)
