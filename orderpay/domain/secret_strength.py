"""Whether a secret that callers must present is guessable.

Shorter HMAC secrets and tokens fall to an offline search from one captured request, and
`change-me...` is the published placeholder of .env.example, known to anyone who read the
repository.
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_SECRET_LENGTH = 32
PLACEHOLDER_PREFIX = "change-me"
SECRET_ADVICE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def weaknesses(named: Iterable[tuple[str, str]]) -> list[str]:
    """What is wrong with each (name, secret), naming the secret, never its value."""
    weak = []
    for name, value in named:
        if value.lower().startswith(PLACEHOLDER_PREFIX):
            weak.append(f"{name} is a {PLACEHOLDER_PREFIX} placeholder")
        elif len(value) < MIN_SECRET_LENGTH:
            weak.append(f"{name} is shorter than {MIN_SECRET_LENGTH} characters")
    return weak
