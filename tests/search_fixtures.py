"""A repository-like directory for the merge search (base checkpoint, two task vectors, queries)
and the command line of a `deltalab search` worker on it."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pandas as pd
import torch

from deltalab.merging.vectors import TaskVector, build_task_vectors
from deltalab.search.params import SearchParams
from deltalab.search.study import StudyInputs, study_inputs
from deltalab.tensors.reader import Checkpoint
from tests.evaluation_fixtures import build_model, build_tokenizer, questions

ROOT = Path(__file__).resolve().parents[1]


def build_search_workspace(root: Path) -> Path:
    """base/, sft.safetensors, rlvr.safetensors and queries.parquet under `root` (paths are
    relative to it, as in a checkout)."""
    tokenizer = build_tokenizer()
    base = build_model(tokenizer, seed=0, init=0.05)
    for name, model in {"base": base}.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    for name, seed, scale in (("sft", 1, 0.3), ("rlvr", 2, 0.05)):
        ft = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in ft.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
        ft.save_pretrained(root / name)
    build_task_vectors(
        Checkpoint(root / "base"),
        [
            (Checkpoint(root / "sft"), root / "sft.safetensors"),
            (Checkpoint(root / "rlvr"), root / "rlvr.safetensors"),
        ],
        0.5,
        progress=False,
    )
    pd.DataFrame({"question": questions(4)}).to_parquet(root / "queries.parquet")
    return root


def worker_inputs(
    root: Path, cfg: SearchParams, member: str = "baseline-0", method: dict | None = None
) -> StudyInputs:
    """The study inputs of the workspace's search, with paths relative to `root` (`method`:
    `search.params.trial_method`)."""
    meta = [TaskVector(root / f"{v}.safetensors").meta for v in ("sft", "rlvr")]
    vectors = [Path("sft.safetensors"), Path("rlvr.safetensors")]
    return study_inputs(
        member, Path("base"), list(zip(vectors, meta, strict=True)), Path("queries.parquet"), cfg,
        method,
    )  # fmt: skip


def search_cmd(study: str, storage: str, params: Path | None = None) -> list[str]:
    """`deltalab search` joining `study` (run with the workspace as the working directory)."""
    params = params or ROOT / "configs/micro.yaml"
    return [sys.executable, "-m", "deltalab.cli", "search", "--study", study,
            "--storage", storage, "--params", str(params), "--quiet"]  # fmt: skip
