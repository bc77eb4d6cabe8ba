"""Behavior of post-trained checkpoints on the same held-out GSM8K questions.

Per model (`metrics/behavior/<cond>-<seed>.json`, `models.<model>`):

- `greedy`: accuracy, correct, total, no_answer_rate of the greedy answers;
- `pass_at_k.k<k>`: for k = 1, 2, 4, ... < n and k = n, the mean over questions of the unbiased
  estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k) from n samples of which c are correct;
  `k1` is the sample accuracy;
- `diversity`: `distinct_answers`, the mean number of distinct extracted answers among a question's
  n samples (samples without a number are not an answer and are not counted), `distinct_2`, the
  mean over questions of unique / total token bigrams of its n sampled responses (EOS excluded;
  questions whose samples have no bigram are skipped, null when none has one), and
  `no_answer_rate`, the share of samples without a number;
- `confidence`: `mean_logprob` and `mean_entropy` of the greedy response under teacher forcing
  (per token, EOS included, averaged per question, then over questions), `majority_share` (share
  of the n samples that give the most common extracted answer; samples without a number never
  agree, so a question whose samples give no number counts 0) and `majority_accuracy` (that
  most common answer is correct; ties go to the answer given first among the samples);
- `length`: mean response tokens (EOS included) and stop rate (share that ended with EOS), greedy
  and sampled.

Per comparison `comparisons.<treatment>_vs_<reference>`: `greedy` from
`stats.compare_paired` (accuracies, difference, paired bootstrap interval, exact McNemar p,
discordant counts) and `pass_at_k.k<k>` with both means, their difference and the bootstrap
interval of the per-question pass@k difference. Intervals resample questions of this one seed
(`interval` says so): they measure question sampling, not seed-to-seed variation.

Top-level `questions` and `samples` give the sizes. Sample j of question i is drawn with the seed
(`behavior.seed`, i, j) for every model (common random numbers; see `sampling`). The per-question
records (`reports/behavior/<cond>-<seed>/samples.jsonl`, from `question_record`) hold everything
the summaries are computed from, so they can be recomputed from that file.

The pure functions on prediction records come first; `evaluate_behavior` and `run_behavior` below
do the model I/O (torch and transformers are imported only there).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from deltalab.errors import CheckpointError, DeltalabError
from deltalab.evaluation.answers import answers_match, extract_answer
from deltalab.evaluation.params import BehaviorParams
from deltalab.evaluation.stats import compare_paired, paired_bootstrap_ci

if TYPE_CHECKING:  # generation needs torch and transformers: imported where it runs
    from deltalab.evaluation.engine import Engine, EngineName

# --------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i), which needs no big binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def k_values(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, then n itself."""
    if n < 1:
        raise ValueError(f"need n >= 1, got {n}")
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


# --------------------------------------------------------------------------- per question


def distinct_ngram_ratio(sequences: Sequence[Sequence[int]], order: int = 2) -> float | None:
    """Unique / total n-grams (within each sequence) pooled over `sequences`; None without any."""
    grams = [tuple(s[i : i + order]) for s in sequences for i in range(len(s) - order + 1)]
    return len(set(grams)) / len(grams) if grams else None


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """(most common answer, its count) among answers that are not None; ties: first given."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0
    best = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == best)
    return winner, best


def _body(token_ids: Sequence[int], stopped: bool) -> list[int]:
    return list(token_ids[:-1] if stopped else token_ids)


def question_record(
    model: str,
    row: Mapping[str, Any],
    greedy,
    samples: Sequence,
    logprob: float,
    entropy: float,
) -> dict[str, Any]:
    """One line of samples.jsonl: a model's greedy and sampled answers to one question.

    `greedy` and `samples` are `generation.Generation`s (text, token_ids, stopped).
    """
    gold = row["gold"]
    greedy_extracted = extract_answer(greedy.text)
    extracted = [extract_answer(s.text) for s in samples]
    majority, _ = majority_vote(extracted)
    return {
        "model": model,
        "id": row["id"],
        "gold": gold,
        "greedy_response": greedy.text,
        "greedy_extracted": greedy_extracted,
        "greedy_correct": answers_match(greedy_extracted, gold),
        "greedy_stopped": greedy.stopped,
        "greedy_tokens": greedy.num_tokens,
        "greedy_logprob": logprob,
        "greedy_entropy": entropy,
        "sample_extracted": extracted,
        "sample_correct": [answers_match(a, gold) for a in extracted],
        "sample_stopped": [s.stopped for s in samples],
        "sample_tokens": [s.num_tokens for s in samples],
        "majority_answer": majority,
        "majority_correct": answers_match(majority, gold),
        "distinct_2": distinct_ngram_ratio([_body(s.token_ids, s.stopped) for s in samples]),
    }


# --------------------------------------------------------------------------- summaries


def _n_samples(records: Sequence[Mapping[str, Any]]) -> int:
    if not records:
        raise ValueError("no question records")
    sizes = {len(r["sample_correct"]) for r in records}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every question needs the same number (>= 1) of samples, got {sizes}")
    return sizes.pop()


def question_pass_at_k(records: Sequence[Mapping[str, Any]], k: int) -> np.ndarray:
    """pass@k of every question (same order as `records`)."""
    n = _n_samples(records)
    return np.array([pass_at_k(n, sum(r["sample_correct"]), k) for r in records])


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values))


def summarize_model(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics block of one model from its question records."""
    n = _n_samples(records)
    total = len(records)
    correct = sum(bool(r["greedy_correct"]) for r in records)
    samples_total = total * n
    distinct_2 = [r["distinct_2"] for r in records if r["distinct_2"] is not None]
    return {
        "greedy": {
            "accuracy": correct / total,
            "correct": correct,
            "total": total,
            "no_answer_rate": sum(r["greedy_extracted"] is None for r in records) / total,
        },
        "pass_at_k": {f"k{k}": _mean(question_pass_at_k(records, k)) for k in k_values(n)},
        "diversity": {
            "distinct_answers": _mean(
                [len({a for a in r["sample_extracted"] if a is not None}) for r in records]
            ),
            "distinct_2": _mean(distinct_2) if distinct_2 else None,
            "no_answer_rate": sum(a is None for r in records for a in r["sample_extracted"])
            / samples_total,
        },
        "confidence": {
            "mean_logprob": _mean([r["greedy_logprob"] for r in records]),
            "mean_entropy": _mean([r["greedy_entropy"] for r in records]),
            "majority_share": _mean([majority_vote(r["sample_extracted"])[1] / n for r in records]),
            "majority_accuracy": sum(bool(r["majority_correct"]) for r in records) / total,
        },
        "length": {
            "greedy_tokens": _mean([r["greedy_tokens"] for r in records]),
            "greedy_stop_rate": sum(bool(r["greedy_stopped"]) for r in records) / total,
            "sample_tokens": sum(t for r in records for t in r["sample_tokens"]) / samples_total,
            "sample_stop_rate": sum(bool(s) for r in records for s in r["sample_stopped"])
            / samples_total,
        },
    }


def _paired(reference, treatment) -> tuple[list, list]:
    ref_ids = [r["id"] for r in reference]
    if ref_ids != [r["id"] for r in treatment]:
        raise ValueError("paired models must answer the same questions in the same order")
    return list(reference), list(treatment)


def compare_models(
    reference: Sequence[Mapping[str, Any]],
    treatment: Sequence[Mapping[str, Any]],
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Paired greedy test and per-k bootstrap intervals of treatment - reference."""
    reference, treatment = _paired(reference, treatment)
    n = _n_samples(reference)
    if _n_samples(treatment) != n:
        raise ValueError("paired models must have the same number of samples per question")
    greedy = compare_paired(
        [bool(r["greedy_correct"]) for r in reference],
        [bool(r["greedy_correct"]) for r in treatment],
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
    )
    passk = {}
    for k in k_values(n):
        ref, trt = question_pass_at_k(reference, k), question_pass_at_k(treatment, k)
        low, high = paired_bootstrap_ci(
            ref, trt, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed
        )
        passk[f"k{k}"] = {
            "reference": float(ref.mean()),
            "treatment": float(trt.mean()),
            "difference": float(trt.mean() - ref.mean()),
            "questions_ci_low": low,
            "questions_ci_high": high,
        }
    return {
        "greedy": greedy,
        "pass_at_k": passk,
        "interval": (
            f"{confidence:.0%} paired bootstrap, {len(reference)} questions resampled "
            f"({n_bootstrap} times), one seed: question sampling only, not seed-to-seed variance"
        ),
    }


def comparison_name(treatment: str, reference: str) -> str:
    return f"{treatment}_vs_{reference}"


def behavior_metrics(
    records: Mapping[str, Sequence[Mapping[str, Any]]], params: BehaviorParams
) -> dict[str, Any]:
    """The whole metrics file: `models`, `comparisons`, `questions`, `samples`."""
    metrics: dict[str, Any] = {
        "models": {model: summarize_model(records[model]) for model in params.models}
    }
    metrics["comparisons"] = {
        comparison_name(treatment, reference): compare_models(
            records[reference],
            records[treatment],
            n_bootstrap=params.n_bootstrap,
            confidence=params.confidence,
            seed=params.seed,
        )
        for treatment, reference in params.pairs
    }
    metrics["questions"] = len(records[params.models[0]])
    metrics["samples"] = params.samples
    return metrics


# --------------------------------------------------------------------------- model I/O


def evaluate_behavior(
    model_name: str,
    engine: Engine,
    rows: Sequence[Mapping[str, Any]],
    params: BehaviorParams,
    *,
    progress: bool = False,
    fit_context: bool = False,
) -> list[dict[str, Any]]:
    """Greedy answers, their teacher-forced confidence and `params.samples` sampled answers to
    every row (prepared GSM8K rows), as question records."""
    from deltalab.evaluation.prompts import format_prompt

    prompts = [format_prompt(engine.tokenizer, r["question"]) for r in rows]
    if fit_context:  # a CLI default past this model's context: capped, with a warning
        budget = engine.fit_new_tokens(prompts, params.max_new_tokens)
        params = params.model_copy(update={"max_new_tokens": budget})
    greedy = engine.greedy(
        prompts,
        max_new_tokens=params.max_new_tokens,
        batch_size=params.batch_size,
        progress=progress,
        desc=f"{model_name} greedy",
    )
    confidence = engine.confidence(
        prompts, [g.token_ids for g in greedy], batch_size=params.batch_size
    )
    samples = engine.sample(
        prompts,
        **params.sampling_kwargs(),
        progress=progress,
        desc=f"{model_name} samples",
    )
    return [
        question_record(model_name, row, g, s, c.mean_logprob, c.mean_entropy)
        for row, g, s, c in zip(rows, greedy, samples, confidence, strict=True)
    ]


@dataclass
class BehaviorResult:
    metrics: dict[str, Any]
    records: dict[str, list[dict[str, Any]]]  # model -> question records


def check_one_tokenizer(checkpoints: Mapping[str, str | os.PathLike]) -> None:
    """Paired statistics compare answers to the same prompts: every checkpoint must tokenize
    them alike (same vocabulary and special tokens), or the comparison is refused before any
    model is loaded."""
    from transformers import AutoTokenizer

    first_name, first = None, None
    for name, path in checkpoints.items():
        tok = AutoTokenizer.from_pretrained(path)
        key = (tok.get_vocab(), tok.all_special_tokens, tok.chat_template)
        if first is None:
            first_name, first = name, key
        elif key != first:
            what = ("vocabulary", "special tokens", "chat template")
            differs = next(w for w, a, b in zip(what, key, first, strict=True) if a != b)
            raise CheckpointError(
                f"{path}: its tokenizer's {differs} differs from {checkpoints[first_name]}'s: "
                f"{name} and {first_name} cannot be compared on the same prompts"
            )


def run_behavior(
    checkpoints: Mapping[str, str | os.PathLike],
    rows: Sequence[Mapping[str, Any]],
    params: BehaviorParams,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    progress: bool = False,
    engine: EngineName = "hf",
    fit_context: bool = False,
) -> BehaviorResult:
    """Load each checkpoint of `params.models` in turn (one in memory at a time), answer `rows`,
    and compute the metrics. Writes nothing; errors name the checkpoint."""
    from deltalab.evaluation.engine import open_engine

    check_one_tokenizer({name: checkpoints[name] for name in params.models})
    records: dict[str, list[dict[str, Any]]] = {}
    for name in params.models:
        path = checkpoints[name]
        generator = open_engine(
            path, engine, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
        try:
            records[name] = evaluate_behavior(
                name, generator, rows, params, progress=progress, fit_context=fit_context
            )
        except DeltalabError as exc:
            raise type(exc)(f"{path}: {exc}") from exc
        del generator
    return BehaviorResult(metrics=behavior_metrics(records, params), records=records)
