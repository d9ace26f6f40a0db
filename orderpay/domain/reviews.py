"""Why an outcome was kept for an operator's decision: the review queue's reason codes."""

from __future__ import annotations

from enum import StrEnum


class ReviewReason(StrEnum):
    # A provider reports the other terminal outcome of a settled payment (a success after a
    # failure, or the reverse).
    OUTCOME_CONFLICT = "outcome_conflict"
    # The amount or currency reported is not the payment's.
    AMOUNT_MISMATCH = "amount_mismatch"
    # An outcome under another reference for an order already paid: money taken twice?
    SECOND_PAYMENT = "second_payment"
    # A success for a payment the operator failed without the provider's word (cancel --force).
    SUCCESS_AFTER_CANCEL = "success_after_cancel"
    # A success for a payment whose order was cancelled meanwhile: money taken for nothing.
    SUCCESS_ON_CANCELLED_ORDER = "success_on_cancelled_order"
    # A refund's provider reports an outcome our record of the refund contradicts.
    REFUND_CONFLICT = "refund_conflict"
    # A payment or refund asked of its provider past the catch-up deadline without a
    # definite answer.
    NO_FINAL_ANSWER = "no_final_answer"
    # A sender reports money for a payment under a transaction id another payment holds.
    SENDER_ID_CONFLICT = "sender_id_conflict"


class FindingMoney(StrEnum):
    """What a finding says of its payment's money: the one notion the refund checks read.

    A refund of a payment is held while an open finding says the money may not have been
    taken, and allowed (up to the payment's amount) while one says money was taken that
    orderpay did not record, whatever amount or currency the provider named.
    """

    TAKEN = "taken"  # taken, though our record does not say so (all of it to give back)
    MAYBE_NOT_TAKEN = "maybe_not_taken"  # recorded taken, but the provider says otherwise


def finding_money(*, reported_succeeded: bool, recorded_succeeded: bool) -> FindingMoney | None:
    """What a provider's report that contradicts our record of a payment says of its money,
    whatever amount or currency it names: a success for a payment not recorded succeeded is
    money taken; a failure, money that may not have been, whatever the payment's record says
    now (a payment still pending may succeed later, and the finding still stands)."""
    if not reported_succeeded:
        return FindingMoney.MAYBE_NOT_TAKEN
    if not recorded_succeeded:
        return FindingMoney.TAKEN
    return None
