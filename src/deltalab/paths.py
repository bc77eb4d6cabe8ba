"""Paths that are contracts between stages (DESIGN.md §Stage graph)."""

from __future__ import annotations

from pathlib import Path

DATA = Path("data/prepared")
TOKENIZER = Path("models/tokenizer")


def checkpoint(cond: str, seed: int, stage: str) -> Path:
    """`models/<cond>/seed<seed>/<stage>/` (pretrain, sft_tulu, sft_gsm8k)."""
    return Path("models") / cond / f"seed{seed}" / stage


def train_metrics(stage: str, cond: str, seed: int) -> Path:
    """dvclive directory of a training stage: `metrics/train/<stage>/<cond>-<seed>/`."""
    return Path("metrics/train") / stage / f"{cond}-{seed}"
