"""Real parallel processes for race tests: forked children released together by a barrier."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

FORK = multiprocessing.get_context("fork")


def _cli_after_barrier(barrier: Any, env: dict[str, str], args: list[str]) -> None:
    """Child process: wait until every sibling is ready, then run the real CLI entry point."""
    from orderpay.cli import app

    os.environ.update(env)
    barrier.wait(timeout=30)
    app(args=args, prog_name="orderpay")  # exits the process with the command's exit code


def run_cli_in_parallel(env: dict[str, str], argvs: list[list[str]]) -> list[int]:
    """Run `orderpay ARGV` once per argv, all at the same moment; their exit codes."""
    barrier = FORK.Barrier(len(argvs))
    processes = [
        FORK.Process(target=_cli_after_barrier, args=(barrier, env, argv)) for argv in argvs
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    return [process.exitcode if process.exitcode is not None else -1 for process in processes]
