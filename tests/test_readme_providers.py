"""The README's table of providers is the capability records as `Capabilities.describe()` words
them (orderpay/providers/capabilities.py), row for row, so that it cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from orderpay.providers.capabilities import CAPABILITIES

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- providers table: begin"
END = "<!-- providers table: end -->"


def providers_table() -> str:
    """The table as the README must hold it (paste it from a failure's message)."""
    rows = [record.describe() for record in CAPABILITIES.values()]
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(row[c].replace("|", "\\|") for c in columns) + " |" for row in rows),
    ]
    return "\n".join(lines)


def _readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1, "README.md has no providers table markers"
    inside = text.split(BEGIN, 1)[1].split("\n", 1)[1]
    assert END in inside, "README.md's providers table has no end marker"
    return inside.split(END, 1)[0].strip()


def test_the_readme_table_of_providers_is_the_capability_records() -> None:
    expected = providers_table()

    assert _readme_table() == expected, (
        "README.md's providers table differs from CAPABILITIES; replace it with:\n\n" + expected
    )


def test_every_provider_and_every_described_field_is_in_the_table() -> None:
    table = _readme_table().splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    names = [line.strip("|").split("|")[0].strip() for line in table[2:]]

    assert names == list(CAPABILITIES)
    for record in CAPABILITIES.values():
        assert header == list(record.describe())


def test_the_table_sits_in_the_providers_section() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Providers\n", 1)[1].split("\n## ", 1)[0]

    assert BEGIN in section
    assert "\n### M-Pesa (Kenya)\n" in section
