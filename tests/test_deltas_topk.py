"""Exact top-k by magnitude: exactly k entries, lowest-index tie-break, streaming."""

from __future__ import annotations

import pytest
import torch

from deltalab.tensors.topk import (
    MaskBuilder,
    energy_above,
    find_threshold,
    histogram_hi,
    threshold_from_histogram,
    topk_count,
    topk_mask,
    topk_mask_reference,
)


def bf16_delta(n: int, seed: int, changed: float = 0.3) -> torch.Tensor:
    """A bf16-style delta: most entries exactly zero, the rest few distinct values (many ties)."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, generator=g) * 0.02).bfloat16()
    step = torch.randn(n, generator=g) * 1e-4 * (torch.rand(n, generator=g) < changed)
    return (w.float() + step).bfloat16().float() - w.float()


CASES = {
    "gaussian": lambda n: torch.randn(n, generator=torch.Generator().manual_seed(n)),
    "bf16_delta": lambda n: bf16_delta(n, n),
    "all_zero": lambda n: torch.zeros(n),
    "few_values": lambda n: torch.randint(
        -2, 3, (n,), generator=torch.Generator().manual_seed(n)
    ).float(),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 100, 4099])
def test_exactly_k_and_equal_to_sorted_reference(case, n):
    x = CASES[case](n)
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n, n + 3}):
        if k < 0:
            continue
        mask = topk_mask(x, k)
        assert int(mask.sum()) == min(k, n)
        assert torch.equal(mask, topk_mask_reference(x, k)), (case, n, k)


def test_ties_keep_lowest_indices_and_threshold_would_overshoot():
    # the DoTS rule (|x| >= k-th value) keeps more than k on bf16 deltas, and everything when
    # most deltas are exactly zero
    sparse = bf16_delta(20_000, 0, changed=0.2)
    k = topk_count(sparse.numel(), 0.3)
    kth = torch.topk(sparse.abs(), k).values[-1]
    assert kth == 0 and int((sparse.abs() >= kth).sum()) == sparse.numel()
    assert int(topk_mask(sparse, k).sum()) == k
    x = bf16_delta(20_000, 0, changed=0.5)
    kth = torch.topk(x.abs(), k).values[-1]
    assert int((x.abs() >= kth).sum()) > k
    mask = topk_mask(x, k)
    assert int(mask.sum()) == k
    t = x.abs()[mask].min()
    assert bool((x.abs()[~mask] <= t).all())
    tied = torch.nonzero((x.abs() == t) & mask).view(-1)
    untied = torch.nonzero((x.abs() == t) & ~mask).view(-1)
    if len(untied):
        assert tied.max() < untied.min()  # lowest flat index first


def test_most_entries_zero_keeps_zeros_by_index():
    x = torch.zeros(1000)
    x[[5, 500, 900]] = torch.tensor([1.0, -3.0, 2.0])
    mask = topk_mask(x, 10)
    assert int(mask.sum()) == 10 and bool(mask[[5, 500, 900]].all())
    kept_zeros = torch.nonzero(mask & (x == 0)).view(-1).tolist()
    assert kept_zeros == [0, 1, 2, 3, 4, 6, 7]


@pytest.mark.parametrize("max_candidates", [0, 1 << 30])
@pytest.mark.parametrize("case", ["bf16_delta", "few_values", "gaussian"])
def test_streamed_chunks_match_whole_tensor(max_candidates, case):
    """Every second-level path: sorted candidates, low-bit histogram, bucket of exact zeros."""
    x = CASES[case](50_000)
    k = topk_count(x.numel(), 0.25)
    chunks = list(x.split(4096))  # arbitrary chunk boundaries; order = flat index order
    hist = histogram_hi(chunks)
    threshold = threshold_from_histogram(hist, k, lambda: chunks, max_candidates)
    builder = MaskBuilder(threshold)
    mask = torch.cat([builder(c) for c in chunks])
    assert torch.equal(mask, topk_mask_reference(x, k))
    expected = float((x.double()[mask] ** 2).sum())
    assert energy_above(chunks, threshold) == pytest.approx(expected, rel=1e-12)


def test_multidimensional_and_low_precision_inputs():
    x = torch.randn(64, 33).bfloat16()
    mask = topk_mask(x, 100)
    assert mask.shape == x.shape and int(mask.sum()) == 100
    assert torch.equal(mask, topk_mask_reference(x.float(), 100))
    assert find_threshold(lambda: (x,), 100).k == 100


def test_topk_count_rounding_and_bad_ratios():
    assert topk_count(10, 0.3) == 3
    assert topk_count(10, 0.01) == 1  # a non-empty tensor keeps at least one entry
    assert topk_count(0, 0.5) == 0
    assert topk_count(7, 1.0) == 7
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            topk_count(10, bad)


@pytest.mark.parametrize("case", ["gaussian", "bf16_delta", "all_zero", "few_values"])
def test_one_pass_path_of_large_tensors(case):
    """Above 2^20 entries the sampled one-pass path runs (tied values included)."""
    n = (1 << 20) + 3
    x = CASES[case](n)
    for ratio in (0.01, 0.3, 0.97):
        k = topk_count(n, ratio)
        assert torch.equal(topk_mask(x, k), topk_mask_reference(x, k)), (case, ratio)
