"""The merged model against its references: accuracies and paired tests on the same questions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from deltalab.errors import DataError
from deltalab.evaluation.compare import load_predictions
from deltalab.evaluation.stats import compare_paired
from deltalab.search.params import MergeParams

GSM8K = "gsm8k"


def _by_id(records: Sequence[Mapping[str, Any]], source: str) -> dict[str, bool]:
    out = {r["id"]: bool(r["correct"]) for r in records if r.get("task", GSM8K) == GSM8K}
    if not out:
        raise DataError(f"{source}: no GSM8K predictions")
    return out


def compare_with_references(
    candidates: Mapping[str, Sequence[Mapping[str, Any]]],
    reference_files: Mapping[str, str | os.PathLike],
    cfg: MergeParams,
) -> dict[str, Any]:
    """Accuracy of every model, and each candidate minus the best reference (ties: the first
    listed), paired by question: difference, bootstrap interval over questions, exact McNemar p.

    The interval covers the variance of the questions only (one seed, one sampling of weights).
    """
    correct = {name: _by_id(recs, name) for name, recs in candidates.items()}
    for name, path in reference_files.items():
        if not os.path.isfile(path):
            raise DataError(f"{path}: no predictions of {name} (run its evaluate stage)")
        correct[name] = _by_id(load_predictions(path), str(path))
    ids = list(next(iter(correct.values())))
    for name, answers in correct.items():
        if set(answers) != set(ids):
            raise DataError(
                f"{name}: answered other GSM8K questions than {next(iter(correct))} "
                "(evaluate.gsm8k_limit changed? re-run its evaluation)"
            )
    accuracy = {name: sum(a.values()) / len(a) for name, a in correct.items()}
    best = max(reference_files, key=lambda n: accuracy[n])
    tests = {}
    for name in candidates:
        test = compare_paired(
            [correct[best][i] for i in ids],
            [correct[name][i] for i in ids],
            n_bootstrap=cfg.n_bootstrap,
            confidence=cfg.confidence,
            seed=cfg.seed,
        )
        tests[name] = {
            k: test[k] for k in ("difference", "questions_ci_low", "questions_ci_high", "mcnemar_p")
        }
    return {
        "accuracy": accuracy,
        "best_single": best,
        "vs_best_single": tests,
        "n_questions": len(ids),
        "interval": f"{cfg.confidence:.0%} paired bootstrap over questions (one seed)",
    }
