"""Evaluate a checkpoint on GSM8K test rows and probe rows: metrics + per-question predictions.

Prediction records (one JSON object per line in the predictions file):
`id, task ("gsm8k" | "probes"), family ("gsm8k" or the probe family), response, extracted, gold,
correct, stopped, num_tokens, mul_tokens`.

Metrics per task (and per probe family): accuracy, correct, total, stop_rate (responses that
generated EOS), mean_response_tokens (generated tokens including EOS), no_answer_rate (no number
extracted), mul_token_rate (share of responses containing at least one mul token) and
mean_mul_tokens (mul tokens per response). Mul tokens are counted in the response text, so a mul
token spelled out of ordinary sub-word pieces counts too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deltalab.atomic import atomic_file, write_json
from deltalab.data.jsonl import read_jsonl as _read_jsonl
from deltalab.errors import DataError
from deltalab.evaluation.answers import (
    answers_match,
    extract_answer,
    gold_from_gsm8k_answer,
    normalize_number,
)
from deltalab.evaluation.params import EvaluateParams
from deltalab.tokens import count_mul_tokens

if TYPE_CHECKING:  # generation needs torch and transformers: imported where it runs
    from deltalab.evaluation.engine import Engine, EngineName
    from deltalab.evaluation.generation import Generation

GSM8K = "gsm8k"
PROBES = "probes"
PROBE_FAMILIES = ("times_table", "two_by_one", "addition")


# --------------------------------------------------------------------------- data


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSONL file (possibly none: callers name what an empty set means)."""
    return _read_jsonl(path, allow_empty=True)


def _require_str(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {value!r}")
    return value


def _check_ids_unique(rows: Sequence[Mapping[str, Any]], source: str) -> None:
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            raise DataError(f"{source}: duplicate id {row['id']!r}")
        seen.add(row["id"])


def _prepare(
    rows: Sequence[Mapping[str, Any]],
    source: str,
    what: str,
    limit: int | None,
    prepare: Callable[[Mapping[str, Any], int, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """`prepare(row, index, where)` for every row (a DataError names the row), then unique ids
    and the optional limit. An empty set is an error naming `what`."""
    if not rows:
        raise DataError(f"{source}: empty {what}")
    prepared = [prepare(row, i, f"{source}: row {i}") for i, row in enumerate(rows)]
    _check_ids_unique(prepared, source)
    return prepared if limit is None else prepared[:limit]


def _gsm8k_row(row: Mapping[str, Any], index: int, where: str) -> dict[str, Any]:
    question = _require_str(row, "question", where)
    answer = _require_str(row, "answer", where)
    try:
        gold = gold_from_gsm8k_answer(answer)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
    row_id = row.get("id", f"gsm8k-{index:05d}")
    return {"id": str(row_id), "family": GSM8K, "question": question, "gold": gold}


def _probe_row(row: Mapping[str, Any], index: int, where: str) -> dict[str, Any]:
    row_id = _require_str(row, "id", where)
    family = _require_str(row, "family", where)
    if family not in PROBE_FAMILIES:
        raise DataError(f"{where}: unknown probe family {family!r} (known: {PROBE_FAMILIES})")
    question = _require_str(row, "question", where)
    gold = normalize_number(str(row.get("answer", "")))
    if gold is None:
        raise DataError(f"{where}: field 'answer' must be a number, got {row.get('answer')!r}")
    return {"id": row_id, "family": family, "question": question, "gold": gold}


def prepare_gsm8k_rows(
    rows: Sequence[Mapping[str, Any]], source: str = "<gsm8k rows>", limit: int | None = None
) -> list[dict[str, Any]]:
    """Validate GSM8K rows, give each an id (`gsm8k-00042` if absent) and its gold number."""
    return _prepare(rows, source, "GSM8K test set", limit, _gsm8k_row)


def prepare_probe_rows(
    rows: Sequence[Mapping[str, Any]], source: str = "<probe rows>", limit: int | None = None
) -> list[dict[str, Any]]:
    """Validate probe rows `{id, family, question, answer}` (answer: the bare number)."""
    return _prepare(rows, source, "probe set", limit, _probe_row)


def load_gsm8k(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    """Read and validate a GSM8K test JSONL file."""
    return prepare_gsm8k_rows(read_jsonl(path), source=str(path), limit=limit)


def load_probes(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    """Read and validate a probes JSONL file."""
    return prepare_probe_rows(read_jsonl(path), source=str(path), limit=limit)


# --------------------------------------------------------------------------- scoring


def score(
    rows: Sequence[Mapping[str, Any]], generations: Sequence[Generation], task: str
) -> list[dict[str, Any]]:
    """Prediction records for prepared rows and their generations (same order)."""
    if len(rows) != len(generations):
        raise ValueError(f"{len(rows)} rows but {len(generations)} generations")
    records = []
    for row, gen in zip(rows, generations, strict=True):
        extracted = extract_answer(gen.text)
        records.append(
            {
                "id": row["id"],
                "task": task,
                "family": row["family"],
                "response": gen.text,
                "extracted": extracted,
                "gold": row["gold"],
                "correct": answers_match(extracted, row["gold"]),
                "stopped": gen.stopped,
                "num_tokens": gen.num_tokens,
                "mul_tokens": count_mul_tokens(gen.text),
            }
        )
    return records


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, float | int]:
    """Accuracy and response statistics of a non-empty list of prediction records."""
    n = len(records)
    if n == 0:
        raise ValueError("cannot summarize zero predictions")
    correct = sum(bool(r["correct"]) for r in records)
    return {
        "accuracy": correct / n,
        "correct": correct,
        "total": n,
        "stop_rate": sum(bool(r["stopped"]) for r in records) / n,
        "mean_response_tokens": sum(r["num_tokens"] for r in records) / n,
        "no_answer_rate": sum(r["extracted"] is None for r in records) / n,
        "mul_token_rate": sum(r["mul_tokens"] > 0 for r in records) / n,
        "mean_mul_tokens": sum(r["mul_tokens"] for r in records) / n,
    }


def metrics_from_predictions(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """`{"gsm8k": {...}, "probes": {..., "<family>": {...}}}` from prediction records."""
    records = list(records)
    metrics: dict[str, Any] = {}
    gsm8k = [r for r in records if r["task"] == GSM8K]
    if gsm8k:
        metrics[GSM8K] = summarize(gsm8k)
    probes = [r for r in records if r["task"] == PROBES]
    if probes:
        metrics[PROBES] = summarize(probes)
        for family in PROBE_FAMILIES:
            members = [r for r in probes if r["family"] == family]
            if members:
                metrics[PROBES][family] = summarize(members)
    return metrics


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)


def evaluate_model(
    engine: Engine,
    gsm8k_rows: Sequence[Mapping[str, Any]],
    probe_rows: Sequence[Mapping[str, Any]] | None,
    params: EvaluateParams,
    *,
    progress: bool = True,
    fit_context: bool = False,
) -> EvaluationResult:
    """Generate and score; rows must come from `prepare_*_rows`/`load_*` (limits already applied).

    `probe_rows` is ignored when `params.probes` is false. `fit_context` caps a token budget the
    longest prompt would push past the model's context, with a warning (the CLI's defaults).
    """
    from deltalab.evaluation.prompts import format_prompt

    tokenizer = engine.tokenizer

    def budget(prompts: list[str], wanted: int) -> int:
        return engine.fit_new_tokens(prompts, wanted) if fit_context else wanted

    if not gsm8k_rows:
        raise DataError("empty GSM8K test set")
    prompts = [format_prompt(tokenizer, r["question"]) for r in gsm8k_rows]
    predictions = score(
        gsm8k_rows,
        engine.greedy(
            prompts,
            max_new_tokens=budget(prompts, params.max_new_tokens),
            batch_size=params.batch_size,
            progress=progress,
            desc="gsm8k",
        ),
        GSM8K,
    )
    if params.probes:
        if not probe_rows:
            raise DataError("params.evaluate.probes is true but the probe set is empty")
        prompts = [format_prompt(tokenizer, r["question"]) for r in probe_rows]
        predictions += score(
            probe_rows,
            engine.greedy(
                prompts,
                max_new_tokens=budget(prompts, params.effective_probes_max_new_tokens),
                batch_size=params.batch_size,
                progress=progress,
                desc="probes",
            ),
            PROBES,
        )
    return EvaluationResult(metrics=metrics_from_predictions(predictions), predictions=predictions)


def write_predictions(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Atomically write prediction records as JSONL."""
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def write_evaluation(
    result: EvaluationResult, metrics_path: str | os.PathLike, predictions_path: str | os.PathLike
) -> None:
    """Write predictions, then metrics, each atomically: no metrics file without predictions."""
    write_predictions(predictions_path, result.predictions)
    write_json(metrics_path, result.metrics)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    gsm8k_path: str | os.PathLike,
    probes_path: str | os.PathLike | None,
    metrics_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    params: EvaluateParams,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    progress: bool = True,
    engine: EngineName = "hf",
    fit_context: bool = False,
) -> EvaluationResult:
    """The whole `evaluate` stage: validate inputs, load, generate, score, write.

    Inputs are validated before the model is loaded so bad data fails in seconds; nothing is
    written unless everything succeeded.
    """
    gsm8k_rows = load_gsm8k(gsm8k_path, limit=params.gsm8k_limit)
    probe_rows = None
    if params.probes:
        if probes_path is None:
            raise DataError("params.evaluate.probes is true but no probes file was given")
        probe_rows = load_probes(probes_path, limit=params.probes_limit)
    from deltalab.evaluation.engine import open_engine  # torch + transformers: inputs are valid

    generator = open_engine(
        checkpoint, engine, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )
    try:
        result = evaluate_model(
            generator, gsm8k_rows, probe_rows, params, progress=progress, fit_context=fit_context
        )
    except DataError as exc:
        raise DataError(f"{checkpoint}: {exc}") from exc
    write_evaluation(result, metrics_path, predictions_path)
    return result
