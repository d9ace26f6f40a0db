"""What a provider's answer proves (DESIGN.md section 4, "ambiguity is pending"). Pure.

A payment or a refund past `initiated` becomes `failed` only on its provider's definite
answer. "Not found" after the provider accepted, a timeout, a 5xx, an ambiguous status: it
stays open and is asked again. A refusal of a re-sent request may only say that the first one
went through: it is believed only when the status call shows a definite failure. Charges,
refunds, cancels, reconcile and the catch-up all decide with these functions.
"""

from __future__ import annotations

from enum import StrEnum


class RemoteState(StrEnum):
    """What a provider's status call says of a request."""

    SUCCEEDED = "succeeded"  # definite: the money moved
    FAILED = "failed"  # definite: it never will
    PENDING = "pending"  # accepted, no outcome yet
    AMBIGUOUS = "ambiguous"  # an answer that settles nothing (MTN: FAILED for an internal error)
    UNKNOWN = "unknown"  # not found: not yet visible, or never received (MTN: 404)


DEFINITE = frozenset({RemoteState.SUCCEEDED, RemoteState.FAILED})


def is_definite(state: RemoteState) -> bool:
    """Whether a status settles the request: only a success or a definite failure does."""
    return state in DEFINITE


def refusal_stands(*, resent: bool, status: RemoteState | None) -> bool:
    """Whether a provider's refusal of a request is its final word. A first request's refusal
    is. A re-sent one's is believed only when `status` (the status call, asked after it) is a
    definite failure: "not found" may be a provider that has not caught up with the first."""
    if not resent:
        return True
    return status is RemoteState.FAILED
