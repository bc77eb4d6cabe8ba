"""The locked environment: every dependency pinned, every pin inside pyproject.toml's ranges."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _lock_pins() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def _project_requirements() -> list[Requirement]:
    """The dependencies the lock installs: the default ones, `dev` and `test` (whose own
    `deltalab[...]` entry expands to those extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted, found = ["dev", "test"], list(project["dependencies"])
    while wanted:
        for line in extras[wanted.pop()]:
            req = Requirement(line)
            if canonicalize_name(req.name) == "deltalab":
                wanted += sorted(req.extras)
            else:
                found.append(line)
    return [Requirement(r) for r in found]


@pytest.mark.parametrize("req", _project_requirements(), ids=str)
def test_lock_pins_each_dependency_inside_its_range(req: Requirement):
    pins = _lock_pins()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is in pyproject.toml but not pinned in {LOCK.name}"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"{LOCK.name} pins {req.name}=={pins[name]}, outside pyproject.toml's '{req}'"
    )


def test_lock_pins_every_package_exactly_once_and_the_cpu_torch():
    lines = [line for line in LOCK.read_text().splitlines() if PIN.match(line)]
    names = [canonicalize_name(PIN.match(line)[1]) for line in lines]
    assert len(names) == len(set(names)) > 50
    assert _lock_pins()["torch"] == Version("2.13.0+cpu")
    # no CUDA libraries: the CPU wheel needs none, and CI must not download gigabytes
    assert not [n for n in names if re.fullmatch(r"nvidia-.*-cu\d+", n)]


def test_readme_and_ci_install_from_the_lock():
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line for line in readme[:8] if line.startswith("python -m pip")]
    assert len(commands) == 2
    assert all("-r requirements/lock.txt" in c and "--no-deps -e ." in c for c in commands)
    assert "-r requirements/lock.txt" in (ROOT / ".ci" / "run").read_text()
