"""Exact McNemar and paired bootstrap, cross-checked against scipy and hand-computed tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from deltalab.evaluation.stats import (
    compare_paired,
    discordant_counts,
    mcnemar_exact,
    paired_bootstrap_ci,
)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, 1.0),  # no discordant pairs: no evidence at all
        (3, 3, 1.0),
        (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
        (1, 9, 2 * (1 + 10) / 1024),  # = 0.021484375
        (9, 1, 2 * (1 + 10) / 1024),
        (2, 8, 2 * (1 + 10 + 45) / 1024),  # = 0.109375
        (4, 5, 1.0),  # the doubled tail exceeds 1
    ],
)
def test_mcnemar_hand_computed(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest() -> None:
    for b in range(0, 40, 3):
        for c in range(0, 40, 5):
            if b + c == 0:
                continue
            expected = sps.binomtest(b, b + c, 0.5).pvalue
            assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_exact(700, 650) == pytest.approx(sps.binomtest(700, 1350, 0.5).pvalue)
    assert mcnemar_exact(0, 5000) == 0.0 or mcnemar_exact(0, 5000) < 1e-300
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_known_two_by_two_table() -> None:
    # 20 questions: 10 both right, 1 only reference right, 7 only treatment right, 2 both wrong.
    ref = [1] * 10 + [1] * 1 + [0] * 7 + [0] * 2
    trt = [1] * 10 + [0] * 1 + [1] * 7 + [0] * 2
    assert discordant_counts(ref, trt) == (1, 7)
    out = compare_paired(ref, trt, n_bootstrap=2000, seed=0)
    assert out["reference_accuracy"] == 11 / 20 and out["treatment_accuracy"] == 17 / 20
    assert out["difference"] == pytest.approx(6 / 20)
    assert out["mcnemar_p"] == pytest.approx(2 * (1 + 8) / 256)  # 0.0703125
    assert out["n"] == 20 and (out["discordant_b"], out["discordant_c"]) == (1, 7)
    assert out["questions_ci_low"] < out["difference"] < out["questions_ci_high"]


def test_bootstrap_matches_scipy_percentile_interval() -> None:
    rng = np.random.default_rng(123)
    ref = rng.random(400) < 0.45
    trt = np.where(rng.random(400) < 0.8, ref, rng.random(400) < 0.6)
    low, high = paired_bootstrap_ci(ref, trt, n_bootstrap=20_000, confidence=0.95, seed=1)
    result = sps.bootstrap(
        (ref.astype(float), trt.astype(float)),
        lambda a, b, axis: b.mean(axis=axis) - a.mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=20_000,
        confidence_level=0.95,
        method="percentile",
        random_state=np.random.default_rng(2),
    )
    assert low == pytest.approx(result.confidence_interval.low, abs=0.006)
    assert high == pytest.approx(result.confidence_interval.high, abs=0.006)
    # and the normal approximation of a paired difference
    d = trt.astype(float) - ref.astype(float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.05)


def test_bootstrap_is_seeded_and_degenerate_cases() -> None:
    ref = [True, False, True, True, False] * 20
    trt = [True, True, False, True, True] * 20
    a = paired_bootstrap_ci(ref, trt, n_bootstrap=1000, seed=7)
    assert a == paired_bootstrap_ci(ref, trt, n_bootstrap=1000, seed=7)
    assert a != paired_bootstrap_ci(ref, trt, n_bootstrap=1000, seed=8)
    assert paired_bootstrap_ci(ref, ref, n_bootstrap=500) == (0.0, 0.0)
    with pytest.raises(ValueError, match="no paired outcomes"):
        paired_bootstrap_ci([], [])
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap_ci([True], [True, False])


def test_cluster_bootstrap_does_not_count_repeated_seeds_as_new_questions() -> None:
    rng = np.random.default_rng(5)
    ref = rng.random(300) < 0.5
    trt = rng.random(300) < 0.6
    ids = [f"q{i}" for i in range(300)]
    one = paired_bootstrap_ci(ref, trt, n_bootstrap=4000, seed=0)
    # two seeds with identical outcomes: the same evidence, so the same width when clustered
    twice_ref, twice_trt, twice_ids = np.r_[ref, ref], np.r_[trt, trt], ids + ids
    clustered = paired_bootstrap_ci(
        twice_ref, twice_trt, n_bootstrap=4000, seed=0, clusters=twice_ids
    )
    naive = paired_bootstrap_ci(twice_ref, twice_trt, n_bootstrap=4000, seed=0)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(clustered) == pytest.approx(width(one), rel=0.08)
    assert width(naive) == pytest.approx(width(one) / np.sqrt(2), rel=0.08)


def test_cluster_labels_of_any_hashable_type_group_by_their_text() -> None:
    """Tuple labels (question, seed) — once a 2-D numpy array and an error — and integers too large
    for a float (2**60 and 2**60 + 1 are one float64) make the same clusters, in the same (text)
    order, as plain question numbers."""
    rng = np.random.default_rng(7)
    ref, trt = rng.random(60) < 0.5, rng.random(60) < 0.6
    questions = [10 + i % 20 for i in range(60)]  # two digits: text order is numeric order
    by_question = paired_bootstrap_ci(ref, trt, n_bootstrap=500, clusters=questions)
    assert by_question != paired_bootstrap_ci(ref, trt, n_bootstrap=500)  # 20 clusters of 3
    for labels in (
        [(f"q{q}", 0) for q in questions],
        [2**60 + q if q > 10 else 0.5 for q in questions],
    ):
        assert paired_bootstrap_ci(ref, trt, n_bootstrap=500, clusters=labels) == by_question


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.05, 1.5, float("nan")])
def test_confidence_outside_zero_one_is_a_clear_error(confidence: float) -> None:
    ref, trt = [True, False, True, False], [True, True, False, True]
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got"):
        paired_bootstrap_ci(ref, trt, n_bootstrap=100, confidence=confidence)
    with pytest.raises(ValueError, match="confidence"):
        compare_paired(ref, trt, n_bootstrap=100, confidence=confidence)


def test_bad_counts_and_cluster_labels_are_clear_errors() -> None:
    for b, c in ((-1, 2), (2, -1), (-3, -3)):
        with pytest.raises(ValueError, match=rf"discordant counts must be >= 0, got b={b}, c={c}"):
            mcnemar_exact(b, c)
    with pytest.raises(ValueError, match="2 cluster labels for 3 pairs"):
        paired_bootstrap_ci([1, 0, 1], [0, 1, 1], n_bootstrap=100, clusters=["q0", "q1"])
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        paired_bootstrap_ci([[1, 0]], [[0, 1]], n_bootstrap=100)


@pytest.mark.parametrize("n_bootstrap", [0, -5])
def test_non_positive_resamples_are_a_clear_error(n_bootstrap: int) -> None:
    with pytest.raises(ValueError, match="n_bootstrap"):
        paired_bootstrap_ci([True, False], [False, True], n_bootstrap=n_bootstrap)
