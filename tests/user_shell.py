"""The installed `orderpay` command, run as a user runs it from a shell.

A subprocess of the console script that `pip install` put next to this Python, in a directory
of the test's, with a controlled environment: PATH, HOME, a UTF-8 locale, and only the orderpay
settings the test gives (none of the developer's, no `.env` but the test's own).

Tests run as root here, and root ignores file permissions; `without_root_override=True` drops
the capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the child before it
starts, so a read-only file is read-only to it as it would be to any user.
"""

from __future__ import annotations

import ctypes
import json
import os
import pty
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORDERPAY = Path(sys.executable).with_name("orderpay")

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        """The JSON error document on stderr (under --json)."""
        return json.loads(self.stderr)["error"]  # type: ignore[no-any-return]


def user_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """A shell's environment with no orderpay configuration but `env`."""
    return {
        "PATH": f"{ORDERPAY.parent}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        **(env or {}),
    }


def _drop_root_override() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def orderpay(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str = "",
    timeout: float = 60,
    without_root_override: bool = False,
) -> Run:
    """Run `orderpay ARGS` in `cwd`; stdin is a pipe (not a terminal) holding `stdin`."""
    preexec = _drop_root_override if without_root_override and os.geteuid() == 0 else None
    done = subprocess.run(
        [str(ORDERPAY), *args],
        cwd=cwd,
        env=user_env(cwd, env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,  # a prctl, then exec: nothing a thread could hold
    )
    return Run(done.returncode, done.stdout, done.stderr)


def orderpay_at_a_terminal(
    cwd: Path, *args: str, answer: str, env: dict[str, str] | None = None, timeout: float = 60
) -> Run:
    """Run `orderpay ARGS` with a terminal for stdin, stdout and stderr, typing `answer` and
    Enter once it asks; the terminal's output is the Run's stdout (and stderr is empty)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(ORDERPAY), *args],
        cwd=cwd,
        env=user_env(cwd, {"COLUMNS": "100", **(env or {})}),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed the terminal: it has finished
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(controller, answer.encode() + b"\n")
                answered = True
        exit_code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return Run(exit_code, output.decode(errors="replace").replace("\r\n", "\n"), "")
