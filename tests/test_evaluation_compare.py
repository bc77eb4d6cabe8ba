"""compare.json: structure, pairing by id, pooling over seeds, bad predictions files; params."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from deltalab.errors import DataError
from deltalab.evaluation.compare import (
    build_compare,
    compare_merge_references,
    compare_prediction_files,
    compare_run_metric,
    compare_run_metrics,
    compare_stage_files,
    compare_summary,
    load_predictions,
    write_compare,
)
from deltalab.evaluation.params import CompareParams, EvaluateParams
from deltalab.evaluation.scoring import write_predictions

PARAMS = CompareParams(n_bootstrap=500, seed=0)
CONDITIONS = ("baseline", "mul_tokens")  # (reference, treatment)
FIELDS = {
    "baseline_accuracy",
    "mul_tokens_accuracy",
    "difference",
    "questions_ci_low",
    "questions_ci_high",
    "mcnemar_p",
    "n",
    "discordant_b",
    "discordant_c",
}


def records(outcomes: list[bool], probes: list[tuple[str, bool]] = ()) -> list[dict]:
    out = [
        {"id": f"gsm8k-{i:05d}", "task": "gsm8k", "family": "gsm8k", "gold": str(i), "correct": c}
        for i, c in enumerate(outcomes)
    ]
    out += [
        {"id": f"p{i}", "task": "probes", "family": fam, "gold": "1", "correct": c}
        for i, (fam, c) in enumerate(probes)
    ]
    return out


BASE = [True, False, False, True, False, False, True, False]
MUL = [True, True, False, False, True, True, True, False]
PROBES_BASE = [
    ("times_table", True),
    ("times_table", True),
    ("two_by_one", False),
    ("addition", True),
]
PROBES_MUL = [
    ("times_table", False),
    ("times_table", True),
    ("two_by_one", True),
    ("addition", True),
]


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def test_single_seed_structure_and_values() -> None:
    preds = {
        ("baseline", 0, "sft_gsm8k"): records(BASE, PROBES_BASE),
        ("mul_tokens", 0, "sft_gsm8k"): records(MUL, PROBES_MUL),
        ("baseline", 0, "sft_tulu"): records(BASE),
        ("mul_tokens", 0, "sft_tulu"): records(BASE),
        ("other_condition", 0, "sft_tulu"): records([True]),  # ignored
    }
    out = build_compare(preds, PARAMS, CONDITIONS)
    assert set(out) == {"sft_gsm8k", "sft_tulu"}
    entry = out["sft_gsm8k"]
    assert entry["n_seeds"] == 1 and "seeds" not in entry
    assert set(entry["gsm8k"]) == FIELDS
    assert set(entry["probes"]) == {"all", "times_table", "two_by_one", "addition"}
    g = entry["gsm8k"]
    assert (g["baseline_accuracy"], g["mul_tokens_accuracy"]) == (3 / 8, 5 / 8)
    assert g["difference"] == pytest.approx(2 / 8)
    assert (g["discordant_b"], g["discordant_c"]) == (1, 3) and g["n"] == 8
    assert g["mcnemar_p"] == pytest.approx(2 * (1 + 4) / 16)
    # the interval by hand: 500 resamples of the 8 pairs drawn from default_rng(seed=0), and the
    # percentiles with numpy's default (linear) definition
    import numpy as np

    d = [int(m) - int(b) for b, m in zip(BASE, MUL, strict=True)]
    resamples = np.random.default_rng(0).integers(0, 8, size=(500, 8)).tolist()
    boot = sorted(sum(d[i] for i in row) / 8 for row in resamples)

    def percentile(q: float) -> float:
        pos = q * (len(boot) - 1)
        return boot[int(pos)] + (pos - int(pos)) * (boot[int(pos) + 1] - boot[int(pos)])

    expected = (percentile(0.025), percentile(0.975))
    assert (g["questions_ci_low"], g["questions_ci_high"]) == pytest.approx(expected, abs=1e-12)
    assert expected[0] < 0 < 2 / 8 < expected[1]  # not a degenerate interval
    tt = entry["probes"]["times_table"]
    assert (tt["baseline_accuracy"], tt["mul_tokens_accuracy"], tt["n"]) == (1.0, 0.5, 2)
    assert (
        out["sft_tulu"]["gsm8k"]["difference"] == 0 and out["sft_tulu"]["gsm8k"]["mcnemar_p"] == 1
    )
    assert "probes" not in out["sft_tulu"]
    # DVC needs numbers and unique flattened names
    flat = flatten(out)
    assert all(isinstance(v, int | float) for v in flat.values())
    assert build_compare(preds, PARAMS, CONDITIONS) == out  # deterministic


def test_several_seeds_pool_and_keep_per_seed_rows() -> None:
    preds = {
        ("baseline", 0, "m"): records(BASE, PROBES_BASE),
        ("mul_tokens", 0, "m"): records(MUL, PROBES_MUL),
        ("baseline", 1, "m"): records(MUL, PROBES_BASE),
        ("mul_tokens", 1, "m"): records(MUL, PROBES_BASE),
    }
    out = build_compare(preds, PARAMS, CONDITIONS)["m"]
    assert out["n_seeds"] == 2
    assert set(out["seeds"]) == {"seed0", "seed1"}
    assert out["seeds"]["seed0"]["gsm8k"]["difference"] == pytest.approx(2 / 8)
    assert out["seeds"]["seed1"]["gsm8k"]["difference"] == 0
    pooled = out["gsm8k"]
    assert pooled["n"] == 16 and (pooled["discordant_b"], pooled["discordant_c"]) == (1, 3)
    assert pooled["baseline_accuracy"] == pytest.approx(8 / 16)
    assert pooled["difference"] == pytest.approx(2 / 16)
    assert out["seeds"]["seed1"]["probes"]["all"]["n"] == 4 and out["probes"]["all"]["n"] == 8
    flat = flatten({"m": out})
    assert len(flat) == len(set(flat))
    assert "m.seeds.seed1.probes.addition.mcnemar_p" in flat


def test_files_roundtrip_and_bad_predictions(tmp_path: Path) -> None:
    paths = {}
    for cond, outcomes in (("baseline", BASE), ("mul_tokens", MUL)):
        path = tmp_path / cond / "seed0" / "sft_gsm8k.predictions.jsonl"
        write_predictions(path, records(outcomes, PROBES_BASE))
        paths[(cond, 0, "sft_gsm8k")] = path
    result = compare_prediction_files(paths, PARAMS, CONDITIONS)
    write_compare(tmp_path / "compare.json", result)
    assert json.loads((tmp_path / "compare.json").read_text()) == result

    # the treatment file lacks two ids
    short = tmp_path / "short.jsonl"
    write_predictions(short, records(MUL[:6], PROBES_BASE))
    bad = {**paths, ("mul_tokens", 0, "sft_gsm8k"): short}
    with pytest.raises(
        DataError, match=rf"{re.escape(str(short))}: missing 2 prediction ids present in .*baseline"
    ):
        compare_prediction_files(bad, PARAMS, CONDITIONS)

    # one condition has no file for this model
    with pytest.raises(
        DataError, match="no predictions for model 'sft_gsm8k', condition 'mul_tokens'"
    ):
        compare_prediction_files(
            {("baseline", 0, "sft_gsm8k"): paths[("baseline", 0, "sft_gsm8k")]}, PARAMS, CONDITIONS
        )

    # different test sets under the same ids
    other = tmp_path / "other.jsonl"
    write_predictions(other, [{**r, "gold": "999"} for r in records(MUL, PROBES_BASE)])
    with pytest.raises(DataError, match="gold answer of gsm8k:gsm8k-00000 differs"):
        compare_prediction_files(
            {**paths, ("mul_tokens", 0, "sft_gsm8k"): other}, PARAMS, CONDITIONS
        )

    # malformed files
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no predictions"):
        load_predictions(tmp_path / "empty.jsonl")
    (tmp_path / "noid.jsonl").write_text(json.dumps({"task": "gsm8k", "correct": True}) + "\n")
    with pytest.raises(DataError, match=r"noid\.jsonl: record 1 lacks id"):
        load_predictions(tmp_path / "noid.jsonl")
    dup = tmp_path / "dup.jsonl"
    write_predictions(dup, records(BASE) + records(BASE)[:1])
    with pytest.raises(DataError, match="duplicate prediction"):
        load_predictions(dup)
    with pytest.raises(DataError, match=r"missing\.jsonl: file not found"):
        load_predictions(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no predictions for conditions"):
        build_compare({}, PARAMS, CONDITIONS)


def test_models_of_one_condition_only() -> None:
    preds = {
        ("baseline", 0, "sft_gsm8k"): records(BASE),
        ("mul_tokens", 0, "sft_gsm8k"): records(MUL),
        ("baseline", 0, "dpo"): records(BASE),  # delta track: baseline only
    }
    with pytest.raises(DataError, match="no predictions for model 'dpo', condition 'mul_tokens'"):
        build_compare(preds, PARAMS, CONDITIONS)
    assert set(build_compare(preds, PARAMS, CONDITIONS, skip_unpaired_models=True)) == {"sft_gsm8k"}
    # a model paired in one seed but not another is still an error
    preds[("baseline", 1, "sft_gsm8k")] = records(BASE)
    with pytest.raises(DataError, match="condition 'mul_tokens', seed 1"):
        build_compare(preds, PARAMS, CONDITIONS, skip_unpaired_models=True)


def _write_all(tmp_path: Path, preds: dict) -> dict:
    files = {}
    for (cond, seed, model), recs in preds.items():
        files[(cond, seed, model)] = tmp_path / f"{cond}-{seed}-{model}.jsonl"
        write_predictions(files[(cond, seed, model)], recs)
    return files


def test_files_skip_unpaired_models(tmp_path: Path) -> None:
    files = _write_all(
        tmp_path,
        {
            ("baseline", 0, "sft_gsm8k"): records(BASE),
            ("mul_tokens", 0, "sft_gsm8k"): records(MUL),
            ("baseline", 0, "dpo"): records(BASE),
        },
    )
    with pytest.raises(DataError, match="no predictions for model 'dpo'"):
        compare_prediction_files(files, PARAMS, CONDITIONS)
    result = compare_prediction_files(files, PARAMS, CONDITIONS, skip_unpaired_models=True)
    assert set(result) == {"sft_gsm8k"}


def test_stage_against_its_parent_within_each_condition(tmp_path: Path) -> None:
    parent, child = [True, False, False, True, False], [True, True, True, False, False]
    files = _write_all(
        tmp_path,
        {
            ("baseline", 0, "sft_gsm8k"): records(parent),
            ("baseline", 0, "dpo"): records(child),
            ("mul_tokens", 0, "sft_gsm8k"): records(parent),  # no dpo here: left out
            # the parent's other seeds, which the delta track did not train: left out
            ("baseline", 1, "sft_gsm8k"): records(child),
            ("baseline", 2, "sft_gsm8k"): records(child),
        },
    )
    result = compare_stage_files(files, [("sft_gsm8k", "dpo"), ("sft_tulu", "rlvr")], PARAMS)
    assert set(result) == {"baseline"} and set(result["baseline"]) == {"dpo_vs_sft_gsm8k"}
    g = result["baseline"]["dpo_vs_sft_gsm8k"]["gsm8k"]
    assert g["sft_gsm8k_accuracy"] == 0.4 and g["dpo_accuracy"] == 0.6
    assert g["difference"] == pytest.approx(0.2)
    # b: only the parent right (question 3); c: only dpo right (questions 1, 2)
    assert (g["discordant_b"], g["discordant_c"]) == (1, 2)
    assert result["baseline"]["dpo_vs_sft_gsm8k"]["n_seeds"] == 1


def test_a_number_per_run_is_compared_over_seeds() -> None:
    """Masked DPO's reward accuracy: one number per run and seed, so only a seed-level interval."""
    values = {0: (0.80, 0.75), 1: (0.70, 0.72), 2: (0.90, 0.79)}  # seed -> (reference, treatment)
    out = compare_run_metric(values, "dpo", "masked_dpo")
    assert out["dpo_accuracy"] == pytest.approx(0.80)
    assert out["masked_dpo_accuracy"] == pytest.approx(0.7533333)
    diffs = [-0.05, 0.02, -0.11]  # treatment - reference
    assert out["difference"] == pytest.approx(sum(diffs) / 3)
    assert out["n_seeds"] == 3 and out["seeds"] == pytest.approx(
        {"seed0": -0.05, "seed1": 0.02, "seed2": -0.11}
    )
    # t(0.975, df=2) = 4.303: half-width 4.303 * sd / sqrt(3)
    sd = (sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2) ** 0.5
    half = 4.302653 * sd / 3**0.5
    assert out["seeds_ci_low"] == pytest.approx(sum(diffs) / 3 - half, rel=1e-5)
    assert out["seeds_ci_high"] == pytest.approx(sum(diffs) / 3 + half, rel=1e-5)
    one = compare_run_metric({0: (0.8, 0.75)}, "dpo", "masked_dpo")
    assert one["n_seeds"] == 1 and "seeds_ci_low" not in one and "seeds" not in one
    with pytest.raises(ValueError, match="no seeds"):
        compare_run_metric({}, "dpo", "masked_dpo")


def test_run_metrics_only_for_pairs_every_seed_holds() -> None:
    runs = {
        0: {"dpo": {"acc": 0.8}, "masked": {"acc": 0.7}, "random": {"acc": 0.6}},
        1: {"dpo": {"acc": 0.9}, "masked": {"acc": 0.8}},  # no random run in seed 1
    }
    pairs = [("dpo", "masked"), ("random", "masked"), ("sft_gsm8k", "dpo")]
    out = compare_run_metrics(runs, pairs, "acc")
    assert list(out) == ["masked_vs_dpo"]
    assert out["masked_vs_dpo"]["difference"] == pytest.approx(-0.1)
    assert out["masked_vs_dpo"]["seeds_sd"] == pytest.approx(0.0, abs=1e-12)


def test_merge_references_against_the_better_single_model_over_seeds() -> None:
    def merge(sft: float, rlvr: float, dense: float, merged: float) -> dict:
        accuracy = {"sft_gsm8k": sft, "rlvr": rlvr, "dense_1_1": dense, "merged": merged}
        return {"accuracy": accuracy, "vs_best_single": {"dense_1_1": {}, "merged": {}}}

    # seed 1's better single model is rlvr, but sft_gsm8k is better on the mean over seeds
    runs = {0: merge(0.60, 0.15, 0.50, 0.49), 1: merge(0.30, 0.35, 0.40, 0.15)}
    out = compare_merge_references(runs, exclude={"merged"})
    assert out["best_single"] == "sft_gsm8k" and set(out) == {
        "best_single",
        "dense_1_1_vs_sft_gsm8k",
    }
    dense = out["dense_1_1_vs_sft_gsm8k"]
    assert dense["seeds"] == pytest.approx({"seed0": -0.10, "seed1": 0.10})
    assert (
        dense["difference"] == pytest.approx(0.0)
        and dense["seeds_ci_low"] < 0 < dense["seeds_ci_high"]
    )
    assert "merged_vs_sft_gsm8k" in compare_merge_references(runs)


def test_summary_names_the_interval_of_every_track_comparison() -> None:
    reward = compare_run_metric({0: (0.8, 0.75), 1: (0.7, 0.72)}, "dpo", "masked_dpo")
    one = compare_run_metric({0: (0.8, 0.75)}, "dpo", "masked_dpo")
    result = {
        "post_training": {"baseline": {"masked_dpo_vs_dpo": {"reward_accuracy": reward}}},
        "merge_references": {"baseline": {"best_single": "sft_gsm8k", "ram_vs_sft_gsm8k": one}},
    }
    text = compare_summary(result, [], CONDITIONS)
    low, high = reward["seeds_ci_low"], reward["seeds_ci_high"]
    assert (
        f"masked_dpo_vs_dpo: reward accuracy diff -0.015, seeds [{low:+.3f}, {high:+.3f}]" in text
    )
    assert "baseline ram_vs_sft_gsm8k: GSM8K diff -0.050, one seed" in text
    assert "best_single" not in text


def test_params_validation() -> None:
    assert EvaluateParams().max_new_tokens == 256
    p = EvaluateParams(max_new_tokens=64, probes_max_new_tokens=None)
    assert p.effective_probes_max_new_tokens == 64
    assert EvaluateParams(probes_max_new_tokens=8).effective_probes_max_new_tokens == 8
    for bad in (
        {"max_new_tokens": 0},
        {"batch_size": 0},
        {"gsm8k_limit": 0},
        {"max_new_token": 5},  # typo: extra keys are forbidden
        {"max_new_tokens": "64"},  # strict: no silent coercion
        {"probes": "yes"},
    ):
        with pytest.raises(ValidationError):
            EvaluateParams(**bad)
    assert CompareParams().confidence == 0.95
    assert CompareParams(confidence=0.9, n_bootstrap=1000, seed=3).seed == 3
    for bad in (
        {"confidence": 1.0},
        {"confidence": 0.2},
        {"n_bootstrap": 10},
        {"seed": -1},
        {"x": 1},
    ):
        with pytest.raises(ValidationError):
            CompareParams(**bad)
