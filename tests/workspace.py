"""Temporary copies of the repository for end-to-end runs, and running commands in them offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def offline_env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The copy's own code, and nothing from the network.
    env["PYTHONPATH"] = str(repo / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def sh(
    repo: Path, *cmd: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=repo, env={**offline_env(repo), **(env or {})}, capture_output=True, text=True
    )
    if check and proc.returncode:
        command = " ".join(cmd)
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_repository(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        # `dvc add`ed files (the report's screenshot) are the committed run's, not the pipeline's:
        # a copy that runs its own pipeline has neither them nor their cache
        if src.is_file() and not rel.endswith(".dvc"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def commit_all(repo: Path, message: str) -> None:
    """A Git repository with one commit of everything (dvclive and `dvc exp` need a revision)."""
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "ci@deltalab")
    sh(repo, "git", "config", "user.name", "ci")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", message)
