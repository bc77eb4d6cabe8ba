"""Paths that are contracts between stages (DESIGN.md §Stage graph)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

DATA = Path("data/prepared")
TOKENIZER = Path("models/tokenizer")
PROBES = DATA / "probes.jsonl"


def dataset(name: str, split: str) -> Path:
    """`data/prepared/<name>/<split>.jsonl` (corpus, tulu, gsm8k, prefs, rlvr; train/val/test)."""
    return DATA / name / f"{split}.jsonl"


def checkpoint(cond: str, seed: int, stage: str) -> Path:
    """`models/<cond>/seed<seed>/<stage>/` (pretrain, sft_tulu, sft_gsm8k, dpo, rlvr, ...)."""
    return Path("models") / cond / f"seed{seed}" / stage


def exp_avg(cond: str, seed: int, name: str) -> Path:
    """Final Adam first moments of a DPO run, by parameter name: `<name>_exp_avg.safetensors`
    beside the checkpoint, not in it (the checkpoint directory holds only the model's weights)."""
    return Path("models") / cond / f"seed{seed}" / f"{name}_exp_avg.safetensors"


def train_metrics(stage: str, cond: str, seed: int) -> Path:
    """dvclive directory of a training stage: `metrics/train/<stage>/<cond>-<seed>/`."""
    return Path("metrics/train") / stage / f"{cond}-{seed}"


def train_summary(stage: str, cond: str, seed: int) -> Path:
    """The final metrics dvclive writes for a training stage (`.../metrics.json`)."""
    return train_metrics(stage, cond, seed) / "metrics.json"


REPORTS = Path("reports")
COMPARE = Path("metrics/compare.json")
PLOTS = Path("metrics/plots")
EVAL_PLOTS = PLOTS / "eval"
ACCURACY_FIGURE = REPORTS / "evaluation" / "accuracy.png"


def eval_metrics(cond: str, seed: int, model: str) -> Path:
    """`metrics/eval/<cond>/seed<seed>/<model>.json` (Git-tracked)."""
    return Path("metrics/eval") / cond / f"seed{seed}" / f"{model}.json"


def predictions(cond: str, seed: int, model: str) -> Path:
    """Per-question predictions of one evaluation (a DVC-cached output)."""
    return REPORTS / "predictions" / cond / f"seed{seed}" / f"{model}.jsonl"


def member(cond: str, seed: int) -> str:
    """The `<cond>-<seed>` name of a delta-track member in metrics and report paths."""
    return f"{cond}-{seed}"


def behavior_metrics(cond: str, seed: int) -> Path:
    """`metrics/behavior/<cond>-<seed>.json` (Git-tracked)."""
    return Path("metrics/behavior") / f"{member(cond, seed)}.json"


def member_plots(stage: str, cond: str, seed: int) -> Path:
    """`metrics/plots/<stage>/<cond>-<seed>/`: plot data DVC renders (behavior, search)."""
    return PLOTS / stage / member(cond, seed)


def member_report(stage: str, cond: str, seed: int) -> Path:
    """`reports/<stage>/<cond>-<seed>/` (a DVC-cached output: deltas, behavior, search, ...)."""
    return REPORTS / stage / member(cond, seed)


def delta_metrics(cond: str, seed: int) -> Path:
    """`metrics/deltas/<cond>-<seed>.json` (Git-tracked)."""
    return Path("metrics/deltas") / f"{member(cond, seed)}.json"


def vectors(cond: str, seed: int) -> Path:
    """`vectors/<cond>/seed<seed>/` holding one `<name>.safetensors` per task vector."""
    return Path("vectors") / cond / f"seed{seed}"


def vector_files(cond: str, seed: int, names: Sequence[str]) -> list[Path]:
    """The task vector files `<name>.safetensors`, in the order of the merge scales."""
    return [vectors(cond, seed) / f"{name}.safetensors" for name in names]


def search_data(cond: str, seed: int) -> Path:
    """`data/search/<cond>/seed<seed>/` (difficulty.parquet, queries.parquet)."""
    return Path("data/search") / cond / f"seed{seed}"


def difficulty_table(cond: str, seed: int) -> Path:
    return search_data(cond, seed) / "difficulty.parquet"


def queries(cond: str, seed: int) -> Path:
    return search_data(cond, seed) / "queries.parquet"


SEARCH_POOL = DATA / "search/pool.jsonl"


def dots_metrics(stage: str, cond: str, seed: int) -> Path:
    """`metrics/<stage>/<cond>-<seed>.json` of the DoTS stages (vectors, difficulty, search,
    merge; Git-tracked)."""
    return Path("metrics") / stage / f"{member(cond, seed)}.json"


def masks(cond: str, seed: int) -> Path:
    """`masks/<cond>/seed<seed>/` holding `<method>.safetensors` (packed bits)."""
    return Path("masks") / cond / f"seed{seed}"


def mask_file(cond: str, seed: int, method: str) -> Path:
    return masks(cond, seed) / f"{method}.safetensors"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of a label."""
    return _UNSAFE.sub("_", text).strip("_") or "x"
