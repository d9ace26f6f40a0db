"""When the catch-up asks a provider again about an open payment or refund. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orderpay.domain.times import parse_age

DEFAULT_STEPS = "1m,5m,15m,1h,6h,24h"
DEFAULT_DEADLINE = "7d"
THEN = timedelta(days=1)  # after the last step: daily


@dataclass(frozen=True, slots=True)
class CatchUpSchedule:
    """The waits between checks (after the first, which comes when the request's lease has
    run out), then daily; past `deadline` since the item was made, an operator is asked."""

    steps: tuple[timedelta, ...]
    deadline: timedelta

    @classmethod
    def parse(cls, steps: str = DEFAULT_STEPS, deadline: str = DEFAULT_DEADLINE) -> CatchUpSchedule:
        waits = tuple(parse_age(part, "catch-up schedule") for part in steps.split(",") if part)
        if not waits:
            raise ValueError("the catch-up schedule needs at least one step, e.g. 1m,5m,1h")
        return cls(waits, parse_age(deadline, "catch-up deadline"))

    def next_check(self, checks_made: int, now: datetime) -> datetime:
        """When to ask next, after `checks_made` checks (this one included)."""
        index = checks_made - 1
        wait = self.steps[index] if 0 <= index < len(self.steps) else THEN
        return now + wait

    def overdue(self, made_at: datetime, now: datetime) -> bool:
        """Whether an item made at `made_at` has waited past the deadline for its answer."""
        return now - made_at > self.deadline
