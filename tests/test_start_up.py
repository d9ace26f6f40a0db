"""What a process does once, when it first opens the database: freeze its start-up objects.

In a fresh interpreter, since freezing is once per process and this test process may have
done it already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import gc, sys
from orderpay.config import load_settings
from orderpay.runtime import Runtime

url = sys.argv[1]
before = gc.get_freeze_count()
first = Runtime(load_settings(DATABASE_URL=url))
first.raw_database
frozen = gc.get_freeze_count()
garbage = [[n] for n in range(10_000)]
second = Runtime(load_settings(DATABASE_URL=url))
second.raw_database
print(before, frozen, gc.get_freeze_count(), gc.isenabled())
"""


@pytest.mark.slow
def test_a_process_freezes_its_start_up_once_when_it_first_opens_the_database(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 'shop.db'}"],
        capture_output=True,
        text=True,
        check=True,
    )

    before, frozen, after_second, enabled = done.stdout.split()
    assert int(before) == 0 < int(frozen) == int(after_second)
    assert enabled == "True"  # objects made later are collected as usual
