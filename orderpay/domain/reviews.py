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
