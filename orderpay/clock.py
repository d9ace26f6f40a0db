"""The one source of the current time, always timezone-aware UTC.

Leases, retries and due times all read `utcnow()`, and the database is given these times as
parameters (never the server's own `now()`), so moving this clock moves all of them: tests
`advance()` it past a lease instead of sleeping through one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def utcnow() -> datetime:
    return datetime.now(UTC) + _offset


def advance(by: timedelta) -> None:
    """Move this process's clock forward (tests only: time passing without a sleep)."""
    global _offset
    _offset += by


def reset() -> None:
    """Back to the wall clock."""
    global _offset
    _offset = timedelta(0)
