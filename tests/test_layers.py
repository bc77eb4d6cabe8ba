"""The import layering of pyproject.toml's `[tool.importlinter]` contracts holds on this tree, and
each contract breaks when a violating import is planted in a copy of the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"
CONTRACTS = {
    c["id"]: c["name"]
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the tree at `root` (its pyproject.toml, src/deltalab and stages/)."""
    env = os.environ | {"PYTHONPATH": str(root / "src"), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--config", "pyproject.toml", "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def broken(proc: subprocess.CompletedProcess[str]) -> set[str]:
    """The ids of the contracts the run reports broken."""
    return {i for i, name in CONTRACTS.items() if f"{name} BROKEN" in proc.stdout}


def test_the_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in proc.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package, the stage scripts and pyproject.toml."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "src" / "deltalab", tmp_path / "src" / "deltalab", ignore=ignore)
    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_copy_is_linted_as_the_tree_is(tree: Path):
    proc = lint_imports(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("module", "code", "contracts"),
    [
        # the bottom layer reaching up to a leaf module
        ("errors.py", "import deltalab.paths\n", {"layers"}),
        # a leaf schema module importing a domain (and so a cycle schema <-> train)
        ("schema/base.py", "import deltalab.train.params\n", {"layers", "acyclic-packages"}),
        # a package nobody placed in a layer
        ("extra.py", "X = 1\n", {"layers"}),
        # a helper reading the whole params file: a library module importing config
        (
            "models.py",
            "from deltalab.config import load_params\n",
            {"layers", "config-entry-points-only", "acyclic-packages"},
        ),
        # inside a function counts too: a domain module loading params itself
        (
            "search/merged.py",
            "def _params():\n    from deltalab.config import load_params\n",
            {"config-entry-points-only", "acyclic-packages"},
        ),
        # two domains importing each other (train already imports data)
        ("data/jsonl.py", "import deltalab.train.params\n", {"acyclic-packages"}),
        # the library importing a stage script (which reaches every layer above paths)
        ("paths.py", "import stages.merge\n", {"stages-on-top", "layers"}),
    ],
)
def test_a_planted_import_breaks_its_contract(
    tree: Path, module: str, code: str, contracts: set[str]
):
    path = tree / "src" / "deltalab" / module
    path.write_text((path.read_text() if path.exists() else "") + "\n" + code)
    proc = lint_imports(tree)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert broken(proc) == contracts, proc.stdout
