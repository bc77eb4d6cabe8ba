"""Seed-level statistics: the t-interval over per-seed differences, in compare.json beside the
question-level interval, each key naming the variance it covers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from deltalab.evaluation.compare import build_compare
from deltalab.evaluation.params import CompareParams
from deltalab.evaluation.stats import seed_interval

PARAMS = CompareParams(n_bootstrap=500, seed=0)
CONDITIONS = ("baseline", "mul_tokens")


def test_seed_interval_matches_scipy_t_interval_and_naive_sd():
    diffs = [-0.045, -0.015, 0.01]
    out = seed_interval(diffs, confidence=0.95)
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)  # sample sd, n - 1
    ci = scipy_stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert out["seeds_mean_difference"] == pytest.approx(mean, abs=1e-15)
    assert out["seeds_sd"] == pytest.approx(sd, rel=1e-12)
    assert (out["seeds_ci_low"], out["seeds_ci_high"]) == pytest.approx((ci.low, ci.high))
    # three seeds: t(0.975, 2) = 4.303, wider than the normal 1.96 by more than 2x
    assert out["seeds_ci_high"] - out["seeds_ci_low"] == pytest.approx(
        2 * 4.3027 * sd / 3**0.5, rel=1e-4
    )


def test_seed_interval_computes_in_float64_whatever_the_input_dtype():
    """float32 per-seed differences are exact in float64; the mean and sd must not be float32."""
    diffs32 = np.array([0.1, 0.2, 0.35], dtype=np.float32)
    as64 = [float(d) for d in diffs32]
    assert seed_interval(diffs32) == seed_interval(as64)
    assert seed_interval(diffs32)["seeds_mean_difference"] == sum(as64) / 3


def test_seed_interval_level_is_the_one_asked_for():
    diffs = [0.1, 0.3, 0.2, 0.25]
    ci90 = scipy_stats.ttest_1samp(diffs, 0.0).confidence_interval(0.90)
    out = seed_interval(diffs, confidence=0.90)
    assert (out["seeds_ci_low"], out["seeds_ci_high"]) == pytest.approx((ci90.low, ci90.high))


@pytest.mark.parametrize(
    ("diffs", "confidence", "message"),
    [
        ([0.1], 0.95, ">= 2 per-seed differences"),
        ([0.1, float("nan")], 0.95, "finite"),
        ([0.1, 0.2], 1.0, "confidence"),
        ([0.1, 0.2], 0.0, "confidence"),
    ],
)
def test_seed_interval_rejects_what_it_cannot_measure(diffs, confidence, message):
    with pytest.raises(ValueError, match=message):
        seed_interval(diffs, confidence=confidence)


def _records(outcomes: list[bool]) -> list[dict]:
    return [
        {"id": f"q{i}", "task": "gsm8k", "family": "gsm8k", "gold": str(i), "correct": c}
        for i, c in enumerate(outcomes)
    ]


def _seeds(per_seed: list[tuple[list[bool], list[bool]]]) -> dict:
    predictions = {}
    for seed, (base, mul) in enumerate(per_seed):
        predictions[("baseline", seed, "sft_gsm8k")] = _records(base)
        predictions[("mul_tokens", seed, "sft_gsm8k")] = _records(mul)
    return predictions


def test_compare_with_three_seeds_has_both_intervals_named_by_their_variance():
    n = 10
    rng = np.random.default_rng(1)
    per_seed, expected = [], []
    for gain in (1, -2, 3):  # mul_tokens gets `gain` more questions right than baseline
        base = [bool(x) for x in rng.integers(0, 2, n)]
        right = (
            [i for i in range(n) if not base[i]] if gain > 0 else [i for i in range(n) if base[i]]
        )
        mul = list(base)
        for i in right[: abs(gain)]:
            mul[i] = not mul[i]
        per_seed.append((base, mul))
        expected.append((sum(mul) - sum(base)) / n)
    assert expected == [0.1, -0.2, 0.3]
    out = build_compare(_seeds(per_seed), PARAMS, CONDITIONS)["sft_gsm8k"]
    g = out["gsm8k"]
    assert out["n_seeds"] == 3
    for seed, diff in enumerate(expected):
        assert out["seeds"][f"seed{seed}"]["gsm8k"]["difference"] == pytest.approx(diff)
    ci = scipy_stats.ttest_1samp(expected, 0.0).confidence_interval(0.95)
    assert g["seeds_mean_difference"] == pytest.approx(np.mean(expected))
    assert g["seeds_sd"] == pytest.approx(np.std(expected, ddof=1))
    assert (g["seeds_ci_low"], g["seeds_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert g["questions_ci_low"] <= g["difference"] <= g["questions_ci_high"]
    assert g["difference"] == pytest.approx(g["seeds_mean_difference"])  # equal n per seed
    # the seeds disagree in sign: the seed interval spans zero and is the wider one
    assert g["seeds_ci_low"] < 0 < g["seeds_ci_high"]
    assert g["seeds_ci_high"] - g["seeds_ci_low"] > g["questions_ci_high"] - g["questions_ci_low"]
    assert not {"ci_low", "ci_high"} & set(g)  # every interval says what it covers


def test_compare_with_one_seed_says_so_and_has_no_seed_interval():
    out = build_compare(_seeds([([True, False, True], [True, True, True])]), PARAMS, CONDITIONS)[
        "sft_gsm8k"
    ]
    assert out["n_seeds"] == 1
    assert "seeds" not in out
    assert not [k for k in out["gsm8k"] if k.startswith("seeds_")]


@pytest.mark.parametrize("outcomes", [["True", "False"], [2, 0], [0.7, 0.2]])
def test_paired_comparison_takes_only_true_false_outcomes(outcomes):
    from deltalab.evaluation.stats import compare_paired

    with pytest.raises(ValueError, match="reference outcomes must be true/false"):
        compare_paired(outcomes, [True, False])
