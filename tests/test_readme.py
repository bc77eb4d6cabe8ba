"""The docs say what the code and metrics say: generated results and claims blocks match, every
dotted `deltalab.` name the README mentions imports, every `deltalab` subcommand has a --help."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.tiny import ROOT
from tools import readme_results

README = (ROOT / "README.md").read_text()
DOTTED = sorted(set(re.findall(r"`(deltalab(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`", README)))


def test_generated_blocks_match_the_metrics_and_the_code(capsys):
    assert readme_results.main(["--check"]) == 0


def test_a_hand_edited_number_fails_the_check(tmp_path):
    for rel in ("README.md", "docs/deltas.md", "params.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    shutil.copytree(ROOT / "metrics", tmp_path / "metrics")
    assert readme_results.main(["--check"], root=tmp_path) == 0
    text = (tmp_path / "README.md").read_text()
    block = re.search(r"<!-- results:conditions -->.*?<!-- /results:conditions -->", text, re.S)
    edited = block.group(0).replace("[-0.525, -0.150]", "[-0.500, -0.150]")
    assert edited != block.group(0)
    (tmp_path / "README.md").write_text(text.replace(block.group(0), edited))
    assert readme_results.main(["--check"], root=tmp_path) == 1
    assert readme_results.main(["--write"], root=tmp_path) == 0
    assert (tmp_path / "README.md").read_text() == text


@pytest.mark.parametrize("name", DOTTED)
def test_every_dotted_name_in_the_readme_imports(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{name}: nothing importable")


def _subcommands() -> list[list[str]]:
    from deltalab.cli import build_parser

    parser = build_parser()
    found = []

    def walk(p, prefix):
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    found.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(parser, [])
    return found


def test_every_subcommand_has_help():
    commands = _subcommands()
    assert {"params", "evaluate", "sample", "behavior", "analyze", "search"} <= {
        c[0] for c in commands
    }
    for command in commands:
        proc = subprocess.run(
            [sys.executable, "-m", "deltalab.cli", *command, "--help"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0 and "usage:" in proc.stdout, (command, proc.stderr[-500:])
