"""A SQLite database orderpay cannot use is the operator's to fix: exit 2 naming the path and
what to do, never exit 7 "retry later" (retrying never helps), and nothing stored.

Run through the installed command without root's permission override, so a read-only file is
read-only to it as it is to any user.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from orderpay.store.db import Database
from orderpay.store.migrate import upgrade
from tests.conftest import count_rows
from tests.user_shell import Run, orderpay

CREATE_CUSTOMER = ("customer", "create", "--name", "Ama Mensah", "--phone", "0241234567")


def _as_user(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    return orderpay(cwd, *args, env=env, without_root_override=True)


def _migrated(path: Path) -> Path:
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    database.dispose()
    return path


@pytest.fixture
def read_only_file(tmp_path: Path) -> Iterator[Path]:
    path = _migrated(tmp_path / "orderpay.db")
    path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    yield path
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "shop"
    directory.mkdir()
    _migrated(directory / "orderpay.db")
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield directory
    directory.chmod(stat.S_IRWXU)


def _rows(path: Path) -> dict[str, int]:
    database = Database(f"sqlite:///{path}")
    try:
        return count_rows(database)
    finally:
        database.dispose()


@pytest.mark.slow
def test_writing_to_a_read_only_file_is_exit_2_naming_the_file(
    tmp_path: Path, read_only_file: Path
) -> None:
    refused = _as_user(tmp_path, *CREATE_CUSTOMER, "--json")

    assert refused.exit_code == 2
    assert refused.error()["code"] == "database_inaccessible"
    assert f"{read_only_file} is read-only for this user" in refused.error()["message"]
    assert "chmod u+rw" in refused.error()["message"]


@pytest.mark.slow
def test_writing_to_a_read_only_file_stores_nothing(tmp_path: Path, read_only_file: Path) -> None:
    before = _rows(read_only_file)

    _as_user(tmp_path, *CREATE_CUSTOMER)

    assert _rows(read_only_file) == before


@pytest.mark.slow
def test_reading_a_read_only_file_still_works(tmp_path: Path, read_only_file: Path) -> None:
    listed = _as_user(tmp_path, "customer", "list", "--json")

    assert listed.exit_code == 0, listed.stderr
    assert listed.json() == {"items": [], "next": None}


@pytest.mark.slow
def test_a_database_in_an_unwritable_directory_is_exit_2_naming_the_directory(
    read_only_directory: Path,
) -> None:
    refused = _as_user(read_only_directory, *CREATE_CUSTOMER, "--json")

    assert refused.exit_code == 2
    assert refused.error()["code"] == "database_inaccessible"
    assert f"the directory {read_only_directory} is not writable" in refused.error()["message"]


@pytest.mark.slow
def test_a_database_in_an_unwritable_directory_stores_nothing(read_only_directory: Path) -> None:
    before = _rows(read_only_directory / "orderpay.db")

    _as_user(read_only_directory, *CREATE_CUSTOMER)

    assert _rows(read_only_directory / "orderpay.db") == before


@pytest.mark.slow
def test_upgrading_into_an_unwritable_directory_is_exit_2_and_creates_nothing(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "locked"
    directory.mkdir(mode=stat.S_IRUSR | stat.S_IXUSR)
    try:
        refused = _as_user(directory, "db", "upgrade")
        left = list(directory.iterdir())
    finally:
        directory.chmod(stat.S_IRWXU)

    assert refused.exit_code == 2
    assert f"the directory {directory} is not writable" in refused.stderr
    assert left == []


@pytest.mark.parametrize("command", [("db", "upgrade"), ("customer", "list"), CREATE_CUSTOMER])
@pytest.mark.slow
def test_a_missing_directory_is_exit_2_naming_it_and_what_to_do(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    missing = tmp_path / "no" / "such" / "dir"

    refused = _as_user(tmp_path, *command, env={"DATABASE_URL": f"sqlite:///{missing}/shop.db"})

    assert refused.exit_code == 2
    assert f"the directory {missing} does not exist" in refused.stderr
    assert f"mkdir -p {missing}" in refused.stderr
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_a_relative_database_path_is_named_absolute(tmp_path: Path) -> None:
    refused = _as_user(tmp_path, "db", "upgrade", env={"DATABASE_URL": "sqlite:///data/shop.db"})

    assert f"the directory {tmp_path / 'data'} does not exist" in refused.stderr
