"""Paired statistics for A/B accuracy comparisons on the same questions.

- Exact McNemar test: two-sided binomial test of the discordant pairs b (reference right,
  treatment wrong) and c (reference wrong, treatment right) against p = 0.5; p = 1 when b + c = 0.
  Equals `scipy.stats.binomtest(b, b + c, 0.5).pvalue` (checked in the tests).
- Paired bootstrap: resample questions with replacement, keeping each question's two outcomes
  together, and take the percentile interval of the accuracy difference (treatment - reference).
  With several seeds a question is a cluster: resampling a question carries its outcomes in every
  seed, because seeds share the test questions and are not independent samples of them.
  The interval's keys say so: `questions_ci_low`, `questions_ci_high`. It covers question
  sampling only, not the variance between training runs.
- Seed-level interval: a t-interval over the per-seed differences (`seeds_ci_low`,
  `seeds_ci_high`). Each seed is a whole training run evaluated on the same questions, so it covers
  training-run variance (and, with the questions fixed, nothing of question sampling). Needs two
  seeds or more; with three, its t quantile (4.30 at 95%) makes it wide, as it should be.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
from scipy import stats as scipy_stats

# Resamples per chunk are limited so the index matrix stays ~32 MB whatever n_bootstrap is.
_CHUNK_ELEMENTS = 4_000_000


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    # Exact integer arithmetic: the tail sum and 2**n stay exact for any n; the division of two
    # Python ints rounds correctly even when both exceed the float range.
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def discordant_counts(reference: Sequence[bool], treatment: Sequence[bool]) -> tuple[int, int]:
    """(b, c): questions only the reference got right, questions only the treatment got right."""
    ref = np.asarray(reference, dtype=bool)
    trt = np.asarray(treatment, dtype=bool)
    return int(np.sum(ref & ~trt)), int(np.sum(~ref & trt))


def paired_bootstrap_ci(
    reference: Sequence[float],
    treatment: Sequence[float],
    *,
    n_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> tuple[float, float]:
    """Percentile interval of mean(treatment) - mean(reference) under paired resampling.

    Outcomes are 0/1 (correct or not) or any per-question score, e.g. a pass@k estimate.

    `clusters` (one label per pair, e.g. the question id when pairs from several seeds are pooled)
    makes whole clusters the resampling unit. Labels are compared by their text: `1` and `"1"`
    are one cluster, `1` and `1.0` two.
    """
    ref = np.asarray(reference, dtype=np.float64)
    trt = np.asarray(treatment, dtype=np.float64)
    if ref.shape != trt.shape or ref.ndim != 1:
        raise ValueError(f"paired outcomes need equal 1-D shapes, got {ref.shape} and {trt.shape}")
    if ref.size == 0:
        raise ValueError("no paired outcomes to bootstrap")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    diff = trt - ref
    if clusters is None:
        sums, sizes = diff, np.ones_like(diff)
    else:
        if len(clusters) != diff.size:
            raise ValueError(f"{len(clusters)} cluster labels for {diff.size} pairs")
        # one label at a time: numpy would turn tuple labels into a 2-D array
        _, inverse = np.unique(np.array([str(c) for c in clusters]), return_inverse=True)
        sums = np.bincount(inverse, weights=diff)
        sizes = np.bincount(inverse).astype(np.float64)
    k = sums.size
    rng = np.random.default_rng(seed)
    stats = np.empty(n_bootstrap, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // k)
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        idx = rng.integers(0, k, size=(stop - start, k))
        stats[start:stop] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def compare_paired(
    reference: Sequence[bool],
    treatment: Sequence[bool],
    *,
    n_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, float | int]:
    """Accuracies, difference (treatment - reference), bootstrap interval, exact McNemar p."""
    ref, trt = np.asarray(reference), np.asarray(treatment)
    for name, outcomes in (("reference", ref), ("treatment", trt)):
        # "False" or 0.7 would silently count as correct
        binary = outcomes.dtype == bool or (
            np.issubdtype(outcomes.dtype, np.integer) and np.isin(outcomes, (0, 1)).all()
        )
        if not binary:
            raise ValueError(f"{name} outcomes must be true/false (or 0/1), got {outcomes.dtype}")
    ref, trt = ref.astype(bool), trt.astype(bool)
    b, c = discordant_counts(ref, trt)
    low, high = paired_bootstrap_ci(
        ref, trt, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, clusters=clusters
    )
    return {
        "reference_accuracy": float(ref.mean()),
        "treatment_accuracy": float(trt.mean()),
        "difference": float(trt.mean() - ref.mean()),
        "questions_ci_low": low,
        "questions_ci_high": high,
        "mcnemar_p": mcnemar_exact(b, c),
        "n": int(ref.size),
        "discordant_b": b,
        "discordant_c": c,
    }


def seed_interval(differences: Sequence[float], *, confidence: float = 0.95) -> dict[str, float]:
    """Mean and sample standard deviation of per-seed differences, and the t-interval of their
    mean over seeds (training-run variance; n - 1 degrees of freedom)."""
    diff = np.asarray(differences, dtype=np.float64)
    if diff.ndim != 1 or diff.size < 2:
        raise ValueError(f"a seed-level interval needs >= 2 per-seed differences, got {diff.size}")
    if not np.isfinite(diff).all():
        raise ValueError(f"per-seed differences must be finite, got {diff.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, diff.size - 1)) * sd / math.sqrt(diff.size)
    return {
        "seeds_mean_difference": mean,
        "seeds_sd": sd,
        "seeds_ci_low": mean - half,
        "seeds_ci_high": mean + half,
    }
