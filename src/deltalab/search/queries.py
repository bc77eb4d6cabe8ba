"""Label-free query scoring: answer consistency over votes, difficulty, easy/hard sampling.

Tables only (pandas, no model): the votes themselves come from `search.voting`.

Gold answers ride along for inspection only; nothing here uses them to score a model.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from deltalab.errors import DataError

NO_ANSWER = None


def consistency(answers: Sequence[str | None]) -> tuple[float, str | None]:
    """(share of the most common answer, that answer); 0 when the most common is "no answer".

    "No answer" (None) competes like any answer (DoTS): a model that mostly fails to answer is
    inconsistent, not consistent. Ties go to the answer given first.
    """
    if not answers:
        raise ValueError("no answers to vote on")
    counts = Counter(answers)
    best = max(counts.values())
    winner = next(a for a in answers if counts[a] == best)
    return (0.0 if winner is NO_ANSWER else best / len(answers)), winner


def difficulty_table(
    rows: Sequence[Mapping[str, Any]],
    answers: Mapping[str, Sequence[Sequence[str | None]]],
    threshold: float,
) -> pd.DataFrame:
    """Per query: each model's consistency and majority answer, difficulty = 1 − mean consistency,
    and `kept` (difficulty ≤ threshold)."""
    table: dict[str, list] = {
        "id": [r["id"] for r in rows],
        "question": [r["question"] for r in rows],
        "gold": [r["gold"] for r in rows],
    }
    per_model = []
    for name, model_answers in answers.items():
        if len(model_answers) != len(rows):
            raise ValueError(f"{name}: {len(model_answers)} answer lists for {len(rows)} queries")
        scored = [consistency(a) for a in model_answers]
        table[f"consistency_{name}"] = [c for c, _ in scored]
        table[f"majority_{name}"] = [m for _, m in scored]
        table[f"no_answer_{name}"] = [sum(x is None for x in a) for a in model_answers]
        table[f"answers_{name}"] = [[("" if x is None else x) for x in a] for a in model_answers]
        per_model.append(table[f"consistency_{name}"])
    mean = [sum(cs) / len(cs) for cs in zip(*per_model, strict=True)]
    table["difficulty"] = [1.0 - m for m in mean]
    table["kept"] = [d <= threshold for d in table["difficulty"]]
    return pd.DataFrame(table)


def sample_easy_hard(difficulty: pd.DataFrame, per_group: int, seed: int) -> pd.DataFrame:
    """Split the kept queries at the median difficulty and draw `per_group` from each half.

    The split is by rank (difficulty, then id), so ties at the median still give halves of equal
    size; a half smaller than `per_group` is taken whole. Rows keep their pool order.
    """
    kept = difficulty[difficulty["kept"]]
    if kept.empty:
        raise DataError(
            "no query left after dropping those above difficulty.threshold: raise the "
            "threshold or use a bigger pool (data.sizes.search)"
        )
    ranked = kept.sort_values(["difficulty", "id"], kind="stable")
    half = len(ranked) // 2
    groups = {"easy": ranked.iloc[:half], "hard": ranked.iloc[half:]}
    rng = random.Random(seed)
    picked = []
    for group, members in groups.items():
        ids = sorted(members["id"])
        chosen = set(rng.sample(ids, min(per_group, len(ids))))
        picked.append(members[members["id"].isin(chosen)].assign(group=group))
    out = pd.concat(picked)
    order = {qid: i for i, qid in enumerate(difficulty["id"])}
    return out.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)


def difficulty_metrics(table: pd.DataFrame, threshold: float, vectors: Sequence[str]) -> dict:
    """The difficulty stage's metrics: pool size, kept queries, mean consistency per vector, and
    the majority answers' accuracy (for inspection only: the search never sees gold answers)."""
    return {
        "pool": len(table),
        "kept": int(table["kept"].sum()),
        "threshold": threshold,
        "mean_difficulty": float(table["difficulty"].mean()),
        "consistency": {v: float(table[f"consistency_{v}"].mean()) for v in vectors},
        "majority_accuracy": {
            v: float((table[f"majority_{v}"] == table["gold"]).mean()) for v in vectors
        },
    }


def load_queries(path: Path, member: str) -> list[str]:
    """The sampled queries' questions (sample_queries' output), in order."""
    if not path.is_file():
        raise DataError(f"{path}: not found (run `dvc repro sample_queries@{member}`)")
    questions = list(pd.read_parquet(path)["question"])
    if not questions:
        raise DataError(f"{path}: no queries")
    return questions
