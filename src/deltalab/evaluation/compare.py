"""Baseline vs mul_tokens for every model stage: the structure of `metrics/compare.json`.

```
{"<model>": {
    "n_seeds": 3,
    "gsm8k": {"baseline_accuracy", "mul_tokens_accuracy", "difference",
              "questions_ci_low", "questions_ci_high", "mcnemar_p", "n", "discordant_b",
              "discordant_c",
              # with >= 2 seeds:
              "seeds_mean_difference", "seeds_sd", "seeds_ci_low", "seeds_ci_high"},
    "probes": {"all": {...}, "times_table": {...}, "two_by_one": {...}, "addition": {...}},
    "seeds": {"seed0": {"gsm8k": {...}, "probes": {...}}, "seed1": {...}, ...}}}
```

`difference` = treatment - reference accuracy (mul_tokens - baseline); `discordant_b` counts
questions only the reference got right, `discordant_c` questions only the treatment got right.
The top level of a model is the pooled result: pairs are matched by (seed, id) and concatenated,
McNemar uses the pooled discordant counts (seeds share questions, so with several seeds this
p-value treats repeated questions as independent; the intervals do not).

Two intervals, named after the variance they cover:
- `questions_ci_*`: bootstrap over questions, each resampled with all its seeds (cluster
  bootstrap): how much the difference would move on other questions, for these trained models.
- `seeds_ci_*`: t-interval over the per-seed differences: how much it moves between training
  runs. Only this one speaks to "does the condition help", and only with several seeds; with one
  seed, `n_seeds: 1` says that training-run variance is unmeasured.

`seeds` lists per-seed rows only when there are several seeds (with one seed they would repeat
the top level). Every flattened key (`sft_gsm8k.probes.times_table.difference`) is unique, so
`dvc exp show --sort-by` works on it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from deltalab.atomic import write_json
from deltalab.errors import DataError
from deltalab.evaluation.params import CompareParams
from deltalab.evaluation.scoring import GSM8K, PROBE_FAMILIES, PROBES, read_jsonl
from deltalab.evaluation.stats import compare_paired, seed_interval

Key = tuple[str, int, str]  # (condition, seed, model)
_REQUIRED = ("id", "task", "family", "gold", "correct")


def load_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate a predictions JSONL file written by the evaluate stage."""
    records = read_jsonl(path)
    if not records:
        raise DataError(f"{path}: no predictions")
    seen: set[tuple[str, str]] = set()
    for lineno, record in enumerate(records, 1):
        missing = [k for k in _REQUIRED if k not in record]
        if missing:
            raise DataError(f"{path}: record {lineno} lacks {', '.join(missing)}")
        if not isinstance(record["correct"], bool):
            raise DataError(f"{path}: record {lineno}: 'correct' must be true or false")
        key = (record["task"], record["id"])
        if key in seen:
            raise DataError(
                f"{path}: duplicate prediction for {record['task']} id {record['id']!r}"
            )
        seen.add(key)
    return records


def _pair(
    reference: Sequence[Mapping[str, Any]],
    treatment: Sequence[Mapping[str, Any]],
    ref_source: str,
    trt_source: str,
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Match records by (task, id); every id must be in both files with the same gold answer."""
    ref_by_key = {(r["task"], r["id"]): r for r in reference}
    trt_by_key = {(r["task"], r["id"]): r for r in treatment}
    for have, have_src, other, other_src in (
        (ref_by_key, ref_source, trt_by_key, trt_source),
        (trt_by_key, trt_source, ref_by_key, ref_source),
    ):
        missing = sorted(set(have) - set(other))
        if missing:
            examples = ", ".join(f"{t}:{i}" for t, i in missing[:3])
            raise DataError(
                f"{other_src}: missing {len(missing)} prediction ids present in {have_src} "
                f"(e.g. {examples})"
            )
    pairs = []
    for key, ref in ref_by_key.items():
        trt = trt_by_key[key]
        if str(ref["gold"]) != str(trt["gold"]):
            raise DataError(
                f"{trt_source}: gold answer of {key[0]}:{key[1]} differs from {ref_source} "
                f"({trt['gold']!r} vs {ref['gold']!r}); were both evaluated on the same data?"
            )
        pairs.append((ref, trt))
    return pairs


def _groups(pairs: Sequence[tuple[int, Mapping[str, Any], Mapping[str, Any]]]):
    """Comparison groups: (path in the output, the pairs that belong to it)."""
    gsm8k = [p for p in pairs if p[1]["task"] == GSM8K]
    probes = [p for p in pairs if p[1]["task"] == PROBES]
    groups: list[tuple[tuple[str, ...], list]] = []
    if gsm8k:
        groups.append(((GSM8K,), gsm8k))
    if probes:
        groups.append(((PROBES, "all"), probes))
        for family in PROBE_FAMILIES:
            members = [p for p in probes if p[1]["family"] == family]
            if members:
                groups.append(((PROBES, family), members))
    return groups


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _stats(pairs, params: CompareParams, reference: str, treatment: str, pooled: bool):
    result = compare_paired(
        [p[1]["correct"] for p in pairs],
        [p[2]["correct"] for p in pairs],
        n_bootstrap=params.n_bootstrap,
        confidence=params.confidence,
        seed=params.seed,
        clusters=[p[1]["id"] for p in pairs] if pooled else None,
    )
    result[f"{reference}_accuracy"] = result.pop("reference_accuracy")
    result[f"{treatment}_accuracy"] = result.pop("treatment_accuracy")
    return result


def build_compare(
    predictions: Mapping[Key, Sequence[Mapping[str, Any]]],
    params: CompareParams,
    conditions: tuple[str, str],
    *,
    sources: Mapping[Key, str] | None = None,
    skip_unpaired_models: bool = False,
) -> dict[str, Any]:
    """compare.json content from prediction records keyed by (condition, seed, model).

    Keys with other conditions are ignored. Every (seed, model) present for one of the two
    conditions must be present for the other, except that `skip_unpaired_models` leaves out
    models evaluated for only one of them (in every seed); `sources` names files in errors.
    `conditions`: (reference, treatment).
    """
    reference, treatment = conditions
    if reference == treatment:
        raise ValueError("reference and treatment must be different conditions")
    sources = dict(sources or {})

    def source(key: Key) -> str:
        return sources.get(key, f"predictions of {key[0]}, seed {key[1]}, model {key[2]}")

    runs = sorted(
        {(seed, model) for cond, seed, model in predictions if cond in (reference, treatment)}
    )
    if skip_unpaired_models:
        # e.g. the delta-track models (dpo, rlvr, ...) that exist for the baseline only
        conds_of: dict[str, set[str]] = {}
        for cond, _, model in predictions:
            conds_of.setdefault(model, set()).add(cond)
        runs = [(s, m) for s, m in runs if {reference, treatment} <= conds_of[m]]
    if not runs:
        raise DataError(f"no predictions for conditions {reference!r} and {treatment!r}")
    per_model: dict[str, dict[int, list]] = {}
    for seed, model in runs:
        ref_key, trt_key = (reference, seed, model), (treatment, seed, model)
        for key in (ref_key, trt_key):
            if key not in predictions:
                raise DataError(
                    f"{source(key)}: missing (no predictions for model {model!r}, "
                    f"condition {key[0]!r}, seed {seed})"
                )
        pairs = _pair(predictions[ref_key], predictions[trt_key], source(ref_key), source(trt_key))
        per_model.setdefault(model, {})[seed] = [(seed, r, t) for r, t in pairs]

    out: dict[str, Any] = {}
    for model, by_seed in per_model.items():
        entry: dict[str, Any] = {"n_seeds": len(by_seed)}
        pooled = [p for seed in sorted(by_seed) for p in by_seed[seed]]
        for path, members in _groups(pooled):
            _set(entry, path, _stats(members, params, reference, treatment, pooled=True))
        if len(by_seed) > 1:
            differences: dict[tuple[str, ...], list[float]] = {}
            for seed in sorted(by_seed):
                for path, members in _groups(by_seed[seed]):
                    stats = _stats(members, params, reference, treatment, pooled=False)
                    _set(entry, ("seeds", f"seed{seed}", *path), stats)
                    differences.setdefault(path, []).append(stats["difference"])
            for path, diffs in differences.items():
                if len(diffs) == len(by_seed):  # the group exists in every seed
                    _get(entry, path).update(seed_interval(diffs, confidence=params.confidence))
        out[model] = entry
    return out


def compare_prediction_files(
    paths: Mapping[Key, str | os.PathLike],
    params: CompareParams,
    conditions: tuple[str, str],
    *,
    skip_unpaired_models: bool = False,
) -> dict[str, Any]:
    """Load predictions files keyed by (condition, seed, model) and build compare.json content."""
    wanted = {k: Path(p) for k, p in paths.items() if k[0] in conditions}
    records = {key: load_predictions(path) for key, path in wanted.items()}
    sources = {key: str(path) for key, path in wanted.items()}
    return build_compare(
        records,
        params,
        conditions,
        sources=sources,
        skip_unpaired_models=skip_unpaired_models,
    )


def compare_stage_files(
    paths: Mapping[Key, str | os.PathLike],
    stage_pairs: Sequence[tuple[str, str]],
    params: CompareParams,
) -> dict[str, Any]:
    """Within each condition, each (reference, treatment) pair of model stages evaluated on the
    same questions, e.g. (sft_gsm8k, dpo): `{cond: {"<treatment>_vs_<reference>": {...}}}` with the
    fields of `build_compare` (accuracies named after the two stages), over the seeds both stages
    have. Pairs whose files are absent for a condition are left out."""
    out: dict[str, Any] = {}
    for cond in sorted({c for c, _, _ in paths}):
        for reference, treatment in stage_pairs:
            # Relabel (cond, seed, model) as (model, seed, cond): the two stages play the two
            # "conditions" of the paired comparison.
            keys = {(m, s, cond): p for (c, s, m), p in paths.items() if c == cond}
            keys = {k: p for k, p in keys.items() if k[0] in (reference, treatment)}
            # only the seeds both stages have (the delta track may run fewer seeds than the
            # stages it starts from)
            seeds = [{s for m, s, _ in keys if m == stage} for stage in (reference, treatment)]
            keys = {k: p for k, p in keys.items() if k[1] in seeds[0] & seeds[1]}
            if {k[0] for k in keys} != {reference, treatment}:
                continue
            result = compare_prediction_files(keys, params, (reference, treatment))
            out.setdefault(cond, {})[f"{treatment}_vs_{reference}"] = result[cond]
    return out


def compare_run_metric(
    values: Mapping[int, tuple[float, float]],
    reference: str,
    treatment: str,
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """A number each training run reports once (e.g. DPO's validation reward accuracy), for two
    runs per seed: `values` maps seed -> (reference value, treatment value). The means over seeds,
    the mean difference (treatment - reference), per-seed rows, and with >= 2 seeds the
    t-interval of the difference over seeds (training-run variance: the only variance a single
    number per run can show)."""
    if not values:
        raise ValueError(f"no seeds to compare {treatment!r} with {reference!r}")
    seeds = sorted(values)
    ref = [float(values[s][0]) for s in seeds]
    trt = [float(values[s][1]) for s in seeds]
    out: dict[str, Any] = {
        f"{reference}_accuracy": sum(ref) / len(ref),
        f"{treatment}_accuracy": sum(trt) / len(trt),
        "difference": (sum(trt) - sum(ref)) / len(seeds),
        "n_seeds": len(seeds),
    }
    if len(seeds) > 1:
        diffs = [t - r for r, t in zip(ref, trt, strict=True)]
        out["seeds"] = {f"seed{s}": d for s, d in zip(seeds, diffs, strict=True)}
        out |= seed_interval(diffs, confidence=confidence)
    return out


def compare_run_metrics(
    runs: Mapping[int, Mapping[str, Mapping[str, Any]]],
    stage_pairs: Sequence[tuple[str, str]],
    key: str,
    *,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """`compare_run_metric` of `key` for every (reference, treatment) pair that every seed's
    runs (seed -> {run name: {key: value}}) hold, named `<treatment>_vs_<reference>`."""
    out = {}
    for reference, treatment in stage_pairs:
        if runs and all({reference, treatment} <= set(r) for r in runs.values()):
            values = {s: (r[reference][key], r[treatment][key]) for s, r in runs.items()}
            out[f"{treatment}_vs_{reference}"] = compare_run_metric(
                values, reference, treatment, confidence=confidence
            )
    return out


def compare_merge_references(
    runs: Mapping[int, Mapping[str, Any]],
    exclude: Collection[str] = (),
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The merge stage's merges (metrics/merge/<cond>-<seed>.json, by seed) against the single
    model with the higher mean accuracy over the seeds: `{"best_single": name,
    "<merge>_vs_<best>": compare_run_metric(...)}`, leaving out the merges named in `exclude`
    (the study's own checkpoints, compared on their predictions elsewhere)."""
    first = runs[min(runs)]
    singles = [n for n in first["accuracy"] if n not in first["vs_best_single"]]
    best = max(singles, key=lambda n: sum(r["accuracy"][n] for r in runs.values()))
    merges = [n for n in first["vs_best_single"] if n not in exclude]
    accuracy = {s: {n: {"accuracy": a} for n, a in r["accuracy"].items()} for s, r in runs.items()}
    pairs = [(best, m) for m in merges]
    found = compare_run_metrics(accuracy, pairs, "accuracy", confidence=confidence)
    return {"best_single": best, **found}


def write_compare(path: str | os.PathLike, result: Mapping[str, Any]) -> None:
    """Atomically write compare.json."""
    write_json(path, result)


def compare_summary(
    result: Mapping[str, Any], models: Sequence[str], conditions: tuple[str, str]
) -> str:
    """One line per compared model (both intervals) and per post-training comparison."""
    reference, treatment = conditions
    lines = []
    for model in models:
        g, n_seeds = result[model]["gsm8k"], result[model]["n_seeds"]
        seeds = (
            f"seeds [{g['seeds_ci_low']:+.3f}, {g['seeds_ci_high']:+.3f}] (sd {g['seeds_sd']:.3f})"
            if n_seeds > 1
            else "one seed: training-run variance unmeasured"
        )
        lines.append(
            f"{model} ({n_seeds} seeds): {reference} {g[f'{reference}_accuracy']:.3f} vs "
            f"{treatment} {g[f'{treatment}_accuracy']:.3f}, diff {g['difference']:+.3f}, questions "
            f"[{g['questions_ci_low']:+.3f}, {g['questions_ci_high']:+.3f}], {seeds}, "
            f"McNemar p={g['mcnemar_p']:.3g}"
        )
    for cond, comparisons in result.get("post_training", {}).items():
        for name, entry in comparisons.items():
            if g := entry.get("gsm8k"):
                lines.append(
                    f"{cond} {name}: GSM8K diff {g['difference']:+.3f}, questions "
                    f"[{g['questions_ci_low']:+.3f}, {g['questions_ci_high']:+.3f}], "
                    f"{_seeds_text(g)}, McNemar p={g['mcnemar_p']:.3g}"
                )
            if r := entry.get("reward_accuracy"):
                lines.append(
                    f"{cond} {name}: reward accuracy diff {r['difference']:+.3f}, {_seeds_text(r)}"
                )
    for cond, block in result.get("merge_references", {}).items():
        for name, e in block.items():
            if name != "best_single":
                lines.append(f"{cond} {name}: GSM8K diff {e['difference']:+.3f}, {_seeds_text(e)}")
    return "\n".join(lines)


def _seeds_text(entry: Mapping[str, Any]) -> str:
    if entry.get("seeds_ci_low") is None:
        return "one seed"
    return f"seeds [{entry['seeds_ci_low']:+.3f}, {entry['seeds_ci_high']:+.3f}]"
