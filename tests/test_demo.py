"""`orderpay demo`: the whole flow on a bare machine, run as a user would run it.

A subprocess with no orderpay configuration in its environment, in a fresh empty directory;
once with nothing else (embedded SQLite, no Redis) and once with REDIS_URL set to a test db.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.builders import AMA
from tests.redis_helpers import dedicated_redis_db, process_env


@dataclass(frozen=True)
class DemoRun:
    exit_code: int
    stdout: str
    stderr: str
    left_in_cwd: list[str]
    left_in_tmp: list[str]


def run_demo(root: Path, **env: str) -> DemoRun:
    cwd, tmp = root / "cwd", root / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "orderpay", "demo"],
        cwd=cwd,
        env=process_env({"TMPDIR": str(tmp), "COLUMNS": "200", **env}),
        capture_output=True,
        text=True,
        timeout=90,
    )
    return DemoRun(
        done.returncode,
        done.stdout,
        done.stderr,
        sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*")),
        sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")),
    )


@pytest.fixture(scope="module", params=["embedded", "with-redis"])
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoRun]:
    """One run of the demo per mode, shared by the tests below."""
    root = tmp_path_factory.mktemp(f"demo-{request.param}")
    if request.param == "embedded":
        yield run_demo(root)
        return
    with dedicated_redis_db() as url:
        yield run_demo(root, REDIS_URL=url)


def test_the_demo_exits_0(demo: DemoRun) -> None:
    assert demo.exit_code == 0, demo.stderr


def test_the_demo_shows_the_order_paid(demo: DemoRun) -> None:
    assert re.search(r"status\s+paid", demo.stdout), demo.stdout
    assert re.search(r"│\s*order_paid\s*│", demo.stdout), demo.stdout


def test_the_demo_shows_the_message_sent(demo: DemoRun) -> None:
    assert re.search(r"│\s*log\s*│\s*\+\d+\s*│\s*sent\s*│", demo.stdout), demo.stdout
    assert re.search(r"│\s*notification_sent\s*│", demo.stdout), demo.stdout
    assert re.search(rf"message to \{AMA}: \S.*we received your payment", demo.stderr), demo.stderr


def test_the_demo_leaves_no_files_behind(demo: DemoRun) -> None:
    assert demo.left_in_cwd == []
    assert demo.left_in_tmp == []
