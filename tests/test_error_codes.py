"""The README's exit-code table lists every error code the code can produce (DESIGN.md section 7:
"The README's table lists every code the code produces"), each in the row of its exit code and
HTTP status, and lists no code that nothing produces."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import orderpay.cli
import orderpay.jobs
import orderpay.server  # noqa: F401
from orderpay.errors import OrderpayError

README = Path(__file__).resolve().parent.parent / "README.md"
CODE = re.compile(r"`([a-z][a-z0-9_]*)`")

# Codes only the listener answers with, outside the error hierarchy (server.error_response
# words Starlette's own refusals, http/shedding.py a body that came too slowly): no exit code,
# so their row's exit cell is blank.
HTTP_ONLY_CODES = {"method_not_allowed": 405, "request_timeout": 408}

# Every class of the hierarchy may reach a user, the categories included: the CLI raises a
# category itself when a remote orderpay answers with its status (errors.error_for_status,
# e.g. `webhook simulate` told 401 or 409), and OrderpayError itself is `internal_error`.
# Nothing is excluded.
EXCLUDED: dict[str, str] = {}


@dataclass(frozen=True)
class Row:
    exit: str
    http: str
    codes: frozenset[str]


def _every_error_class(cls: type[OrderpayError] = OrderpayError) -> list[type[OrderpayError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_every_error_class(sub))
    return found


def _codes() -> dict[str, tuple[int, int]]:
    """Every code with the (exit code, HTTP status) it is reported with."""
    codes: dict[str, tuple[int, int]] = {}
    for cls in _every_error_class():
        seen = codes.setdefault(cls.code, (cls.exit_code, cls.http_status))
        assert seen == (cls.exit_code, cls.http_status), f"{cls.code} has two meanings"
    return {code: meaning for code, meaning in codes.items() if code not in EXCLUDED}


def _exit_code_table() -> list[Row]:
    """The rows of README's "Exit codes" table: | exit | meaning | HTTP | error codes |."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4 or cells[0] in ("exit", "---"):
            continue
        rows.append(Row(cells[0], cells[2], frozenset(CODE.findall(cells[3]))))
    assert rows, "README.md has no exit-code table"
    return rows


CODES = _codes()


@pytest.mark.parametrize("code", sorted(CODES))
def test_the_readme_lists_each_error_code_in_the_row_of_its_exit_code_and_status(
    code: str,
) -> None:
    exit_code, status = CODES[code]

    rows = [row for row in _exit_code_table() if code in row.codes]

    assert [(row.exit, row.http) for row in rows] == [(str(exit_code), str(status))], (
        f"README.md's exit-code table must list `{code}` once, in the row of exit {exit_code} "
        f"and HTTP {status}"
    )


@pytest.mark.parametrize("code", sorted(HTTP_ONLY_CODES))
def test_the_readme_lists_the_listeners_own_refusals_with_their_status(code: str) -> None:
    rows = [row for row in _exit_code_table() if code in row.codes]

    assert [(row.exit, row.http) for row in rows] == [("", str(HTTP_ONLY_CODES[code]))]


def test_the_readme_lists_no_error_code_that_nothing_produces() -> None:
    listed = set().union(*(row.codes for row in _exit_code_table()))

    assert listed - set(CODES) - set(HTTP_ONLY_CODES) == set()


def test_the_table_has_one_meaning_per_exit_code_and_status() -> None:
    pairs = [(row.exit, row.http) for row in _exit_code_table()]

    assert len(pairs) == len(set(pairs))
