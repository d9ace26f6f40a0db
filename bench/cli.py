"""CPU time of a CLI command's start-up, next to importing SQLAlchemy and Typer in the same run.

Run it from the repository root with the development virtualenv:

    python bench/cli.py                       # 15 rounds
    python bench/cli.py --runs 20
    python bench/cli.py --orderpay /other/venv/bin/orderpay --python /other/venv/bin/python

Set-up (not timed): a temporary directory holding a SQLite database (DATABASE_URL
sqlite:///<tmp>/bench.db), migrated with `orderpay db upgrade`, with one customer, one product
and one order made through the CLI; every command runs with that directory as its working
directory (so no `.env` is read) and with the rest of the environment as given. Bytecode is
written to a cache in the temporary directory (PYTHONPYCACHEPREFIX; PYTHONDONTWRITEBYTECODE is
dropped), and each command runs twice untimed first, so the timed runs load compiled modules
as an installed package does, and nothing is written next to the sources.

What is measured: the CPU time (user + system, from os.wait4's resource usage of the child)
of one process running to its end, for each of

* `orderpay --help`
* `orderpay order list --json` (the database holds one order; one page)
* `orderpay order show ORDER_ID --json` (that order)
* `python -c "import sqlalchemy"` and `python -c "import typer"`: the ceilings, with --python
  (default: this interpreter).

The five run in rounds, one of each per round in a rotating order, so that a busy machine
weighs on all of them alike; each figure is the median of --runs rounds (default 15, at least
8), with the lowest and highest beside it. Each ratio is the median over the rounds of that
round's own ratio (a command and its ceiling ran a few hundred milliseconds apart, under the
same load), followed by the ratio of the two medians. Wall time is not measured: CPU time is
what the operator's machine spends, and it varies less with other load.

Goals (GOAL_* below, judged on the paired ratio; the output says whether each is met, and the
script exits 1 when one is not): `order list --json` at most GOAL_LIST times the CPU of
importing SQLAlchemy (a read command costs little beyond the library it queries with);
`--help` at most GOAL_HELP times the CPU of importing Typer. `order show --json` is shown
against SQLAlchemy too, without a goal. A command that fails stops the script (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import console_script, note, ratio, say

GOAL_LIST = 1.4
GOAL_HELP = 1.5
MIN_RUNS = 8
HELP, LIST, SHOW = (
    "orderpay --help",
    "orderpay order list --json",
    "orderpay order show ORDER --json",
)


def cpu_seconds(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """User + system CPU time of one run of argv; exit 2 with its stderr when it fails."""
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode != 0:
        note(f"{' '.join(argv)} exited {process.returncode}:\n{errors.decode(errors='replace')}")
        raise SystemExit(2)
    return usage.ru_utime + usage.ru_stime


def run_json(argv: Sequence[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        note(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
        raise SystemExit(2)
    document: dict[str, object] = json.loads(done.stdout)
    return document


def prepare(orderpay: str, env: dict[str, str], cwd: Path) -> str:
    """Migrate the database and make one order through the CLI; return the order's id."""
    done = subprocess.run(
        [orderpay, "db", "upgrade"], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        note(f"orderpay db upgrade exited {done.returncode}:\n{done.stderr}")
        raise SystemExit(2)
    customer = run_json(
        [orderpay, "customer", "create", "--name", "Ama", "--phone", "0241234567", "--json"],
        env,
        cwd,
    )
    product = run_json(
        [
            orderpay,
            "product",
            "create",
            "--name",
            "Kenkey",
            "--price",
            "12.50",
            "--currency",
            "GHS",
            "--json",
        ],
        env,
        cwd,
    )
    order = run_json(
        [
            orderpay,
            "order",
            "create",
            "--customer",
            str(customer["id"]),
            "--item",
            f"{product['id']}:2",
            "--json",
        ],
        env,
        cwd,
    )
    return str(order["id"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help=f"rounds (at least {MIN_RUNS})")
    parser.add_argument("--orderpay", help="the orderpay console script (default: this venv's)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the ceilings")
    args = parser.parse_args()
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}")
    orderpay = args.orderpay or str(console_script("orderpay"))

    with tempfile.TemporaryDirectory(prefix="orderpay-bench-cli-") as tmp:
        cwd = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(cwd / "pycache")
        env["DATABASE_URL"] = f"sqlite:///{cwd / 'bench.db'}"
        order_id = prepare(orderpay, env, cwd)

        commands = {
            HELP: [orderpay, "--help"],
            LIST: [orderpay, "order", "list", "--json"],
            SHOW: [orderpay, "order", "show", order_id, "--json"],
            "import sqlalchemy": [args.python, "-c", "import sqlalchemy"],
            "import typer": [args.python, "-c", "import typer"],
        }
        shown = run_json(commands[SHOW], env, cwd)
        listed = run_json(commands[LIST], env, cwd)
        if shown.get("id") != order_id or len(listed.get("items", [])) != 1:  # type: ignore[arg-type]
            note(f"unexpected answers: show {shown}, list {listed}")
            return 2
        for argv in commands.values():  # warm-up: compile and cache bytecode
            for _ in range(2):
                cpu_seconds(argv, env, cwd)

        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for round_ in range(args.runs):
            note(f"round {round_ + 1} of {args.runs}")
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(cpu_seconds(commands[name], env, cwd))

    median = {name: statistics.median(values) for name, values in times.items()}
    say(f"CPU seconds, median of {args.runs} interleaved runs (lowest-highest):")
    for name, values in times.items():
        say(f"  {name:34} {median[name]:.3f} ({min(values):.3f}-{max(values):.3f})")
    goals: list[tuple[str, str, str, float | None]] = [
        ("order list --json / import sqlalchemy", LIST, "import sqlalchemy", GOAL_LIST),
        ("order show --json / import sqlalchemy", SHOW, "import sqlalchemy", None),
        ("--help / import typer", HELP, "import typer", GOAL_HELP),
    ]
    say("Ratios: median of the rounds' own ratios (each round's pair ran side by side), and")
    say("the ratio of the medians above:")
    missed = 0
    for label, command, ceiling, goal in goals:
        paired = statistics.median(
            ratio(value, under) for value, under in zip(times[command], times[ceiling], strict=True)
        )
        verdict = "no goal"
        if goal is not None:
            met = paired <= goal
            missed += not met
            verdict = f"goal <= {goal}x: {'met' if met else 'NOT met'}"
        say(
            f"  {label:38} {paired:.2f}x ({ratio(median[command], median[ceiling]):.2f}x)"
            f"  {verdict}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
