"""What `pip install .` and the Docker image promise: the supported Pythons, declared and run in
CI, and a lock file that pins every runtime dependency with hashes, in step with pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = ROOT / "requirements.lock"
SUPPORTED = ("3.11", "3.12", "3.13")


@dataclass
class Locked:
    requirement: Requirement
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        (spec,) = self.requirement.specifier
        assert spec.operator == "==", self.requirement
        return spec.version


def locked() -> dict[str, Locked]:
    """requirements.lock by canonical name: the pin, its marker, its hashes, its `# via`."""
    entries: dict[str, Locked] = {}
    current: Locked | None = None
    in_via = False
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not line[0].isspace() and not line.startswith("#"):
            current = Locked(Requirement(stripped.rstrip("\\").strip()))
            entries[canonicalize_name(current.requirement.name)] = current
            in_via = False
        elif current is not None and stripped.startswith("--hash="):
            current.hashes.append(stripped.removeprefix("--hash=").rstrip("\\").strip())
        elif current is not None and stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.append(rest)
        elif current is not None and in_via and stripped.startswith("#"):
            current.via.append(stripped.lstrip("#").strip())
    return entries


def dependencies() -> dict[str, Requirement]:
    return {
        canonicalize_name(req.name): req
        for req in map(Requirement, PYPROJECT["project"]["dependencies"])
    }


# Supported Pythons


@pytest.mark.parametrize("version", SUPPORTED)
def test_each_supported_python_is_admitted_and_declared(version: str) -> None:
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])

    assert requires.contains(f"{version}.0")
    assert f"Programming Language :: Python :: {version}" in PYPROJECT["project"]["classifiers"]


@pytest.mark.parametrize("version", ["3.10", "3.14"])
def test_an_untested_python_is_not_admitted(version: str) -> None:
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])

    assert not requires.contains(f"{version}.0")


def test_the_readme_names_the_supported_pythons() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert "supports Python 3.11, 3.12 and 3.13" in readme


def test_ci_runs_every_supported_python() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    suite = re.search(r"^SUITE_PYTHON=(\S+)$", ci, re.MULTILINE)
    others = re.search(r"^OTHER_PYTHONS=\(([^)]*)\)$", ci, re.MULTILINE)
    assert suite
    assert others
    assert sorted([suite.group(1), *others.group(1).split()]) == list(SUPPORTED)


def test_ci_runs_the_readme_commands_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    first, second = re.findall(r"^(pip install .*?)\s{2,}#", readme, re.MULTILINE)[:2]

    assert f'README_DEMO_COMMAND="{first}"' in ci
    assert f'README_TEST_COMMAND="{second}"' in ci


# The lock file


@pytest.mark.parametrize("name", sorted(dependencies()))
def test_every_dependency_is_locked_within_its_range(name: str) -> None:
    wanted = dependencies()[name]
    pin = locked().get(name)

    assert pin is not None, f"{name} is not in requirements.lock: regenerate it (README)"
    assert wanted.specifier.contains(pin.version, prereleases=True), (
        f"requirements.lock pins {name}=={pin.version}, outside {wanted.specifier}"
    )
    assert str(pin.requirement.marker or "") == str(wanted.marker or "")


def test_the_lock_holds_no_direct_dependency_that_pyproject_dropped() -> None:
    direct = {name for name, pin in locked().items() if "orderpay (pyproject.toml)" in pin.via}

    assert direct == set(dependencies())


def test_every_locked_package_is_pinned_with_hashes() -> None:
    for name, pin in locked().items():
        assert pin.hashes, f"{name} has no hash"
        assert all(h.startswith("sha256:") for h in pin.hashes), name


def test_the_lock_says_how_it_was_made() -> None:
    header = LOCK.read_text(encoding="utf-8").splitlines()[:3]

    assert any("uv pip compile pyproject.toml" in line for line in header)


def test_the_image_installs_the_locked_files_and_nothing_else() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()

    assert "COPY requirements.lock ./" in dockerfile
    assert re.search(
        r"pip install --require-hashes --no-deps --requirement requirements\.lock", dockerfile
    )
    assert re.search(r"pip install --no-deps /wheels/orderpay-\*\.whl", dockerfile)
    assert "pip check" in dockerfile
    assert "!requirements.lock" in ignored
