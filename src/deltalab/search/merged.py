"""The merged model: which scales it uses, the dense reference merge, and how it compares with its
references (accuracies and paired tests on the same questions)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deltalab.errors import DataError
from deltalab.evaluation.compare import load_predictions
from deltalab.evaluation.stats import compare_paired
from deltalab.merging.method_spec import MethodParams
from deltalab.merging.vectors import TaskVector, build_task_vectors
from deltalab.search.live_model import live_merge
from deltalab.search.params import MergeParams
from deltalab.tensors.reader import Checkpoint

if TYPE_CHECKING:
    from deltalab.evaluation.engine import Engine

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


def chosen_scales(cfg: MergeParams, search_metrics: Path, stage: str) -> tuple[list[float], str]:
    """(scale_sft, scale_rlvr) and where they come from: the search's chosen point (its metrics
    file), each scale replaced by `merge.<scale>` when that is set; both set: the search is not
    read at all."""
    overrides = cfg.overrides()
    if len(overrides) == 2:
        return [overrides["scale_sft"], overrides["scale_rlvr"]], "params"
    if not search_metrics.is_file():
        raise DataError(f"{search_metrics}: not found (run `dvc repro {stage}`)")
    chosen = json.loads(search_metrics.read_text())["chosen"] | overrides
    origin = f"search trial {chosen['trial']}"
    if overrides:
        origin += " with " + ", ".join(f"{k} from params" for k in overrides)
    return [chosen["scale_sft"], chosen["scale_rlvr"]], origin


def chosen_method(cfg: MergeParams, search_metrics: Path) -> tuple[MethodParams, dict[str, float]]:
    """`merge.method`'s parameters, with the values the search chose for the ones it searched
    (`search.method_ranges`), and those values; with both scales set in params the search is not
    read and the params are used as set."""
    if len(cfg.overrides()) == 2 or not search_metrics.is_file():
        return cfg.method_params(), {}
    metrics = json.loads(search_metrics.read_text())
    method = metrics.get("method") or {"name": "task_arithmetic", "ranges": {}}
    if method["name"] != cfg.method:
        raise DataError(
            f"{search_metrics}: the search merged with {method['name']}, merge.method is "
            f"{cfg.method} (re-run the search)"
        )
    values = {name: metrics["chosen"][name] for name in method["ranges"]}
    return replace(cfg.method_params(), **values), values


def apply_merge(
    engine: Engine,
    base: Checkpoint,
    vectors: Sequence[TaskVector],
    scales: Sequence[float],
    method: str = "task_arithmetic",
    params: MethodParams | None = None,
) -> None:
    """Set the engine's weights to base merged with `vectors` by `method` at `scales`."""
    live, buffers = live_merge(engine, base, vectors, method=method, method_params=params)
    live.apply(list(scales))
    if buffers is not None:
        engine.load_weights(buffers.items())


@contextlib.contextmanager
def dense_vectors(
    base: Checkpoint, finetuned: Sequence[Path], scratch: Path
) -> Iterator[list[TaskVector]]:
    """Dense task vectors (ratio 1.0) of the `finetuned` checkpoints, in a temporary directory
    under `scratch` removed afterwards."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        paths = [Path(tmp) / f"{i}.safetensors" for i in range(len(finetuned))]
        targets = [(Checkpoint(f), p) for f, p in zip(finetuned, paths, strict=True)]
        build_task_vectors(base, targets, 1.0, progress=False)
        yield [TaskVector(p) for p in paths]
