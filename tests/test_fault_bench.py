"""bench/faults.py, run as a person runs it, with tiny numbers: it prints its figure lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "faults.py"
FIGURES = (
    "orders",
    "paid",
    "lost",
    "doubled",
    "never applied",
    "5xx",
    "delivery latency",
    "later than 10 s",
    "verdict",
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The bench's TMPDIR: one its Postgres (run as `nobody` under root) can reach, which
    pytest's tmp_path (mode 0700) is not."""
    directory = Path(tempfile.mkdtemp(prefix="orderpay-fault-bench-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_the_fault_bench_without_faults_prints_every_figure_and_leaves_nothing_behind(
    scratch: Path,
) -> None:
    tiny = ["--orders", "5", "--rate", "0", "--faults", "none", "--listeners", "1"]
    completed = subprocess.run(
        [sys.executable, str(BENCH), *tiny, "--workers", "1", "--drain-timeout", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCH.parent.parent,
        env={**os.environ, "TMPDIR": str(scratch)},
        check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr  # 1: a criterion failed, 2: no run
    lines = completed.stdout.splitlines()
    names = [line.split(":", 1)[0] for line in lines]
    assert [name for name in FIGURES if name not in names] == [], completed.stderr
    assert "orders: 5 (callbacks sent for 5)" in lines
    assert "paid: 5" in lines
    assert "lost: 0" in lines
    assert list(scratch.iterdir()) == []
