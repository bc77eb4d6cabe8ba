"""Tests for mutants of the four core modules (evaluation.stats, tensors.topk, merging.vectors,
merging.disk) that the rest of the suite let survive (issue 12): `mutmut run`, see pyproject's
[tool.mutmut]. Each compares with an independent reference (hand computation, float64, brute
force, the bytes on disk)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from deltalab.errors import ConfigError
from deltalab.evaluation.stats import (
    compare_paired,
    discordant_counts,
    paired_bootstrap_ci,
    seed_interval,
)
from deltalab.merging.compare import compare_vectors
from deltalab.merging.disk import load_vectors, parse_size
from deltalab.merging.vectors import TaskVector, build_task_vectors
from deltalab.tensors.blocks import sum_squares
from deltalab.tensors.reader import Checkpoint
from deltalab.tensors.topk import (
    MAX_CANDIDATES,
    MaskBuilder,
    Threshold,
    energy_above,
    find_threshold,
    histogram_hi,
    log2_histogram,
    threshold_from_histogram,
    topk_count,
    topk_mask,
    topk_mask_reference,
)

# ---------------------------------------------------------------------------------------------
# evaluation.stats


def test_documented_defaults_are_ten_thousand_resamples_95_percent_seed_0():
    # clusters of unequal sizes make the resampled differences nearly continuous, so that the
    # interval moves with one resample more (0/1 outcomes alone give a coarse lattice)
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(60), rng.integers(1, 10, 60))
    ref = rng.random(ids.size) < 0.5
    trt = rng.random(ids.size) < 0.6
    explicit = paired_bootstrap_ci(
        ref, trt, n_bootstrap=10_000, confidence=0.95, seed=0, clusters=ids
    )
    for other in ({"n_bootstrap": 10_001}, {"seed": 1}, {"confidence": 0.9}):
        assert paired_bootstrap_ci(ref, trt, clusters=ids, **other) != explicit
    assert paired_bootstrap_ci(ref, trt, clusters=ids) == explicit
    out = compare_paired(ref, trt, clusters=ids)
    assert (out["questions_ci_low"], out["questions_ci_high"]) == explicit
    diffs = [0.1, 0.3, 0.2]
    assert seed_interval(diffs) == seed_interval(diffs, confidence=0.95)


def test_bootstrap_equals_a_naive_percentile_interval_of_the_same_draws():
    """One (n_bootstrap, n) draw of question indices from default_rng(seed); the mean difference
    of each resample; numpy's percentiles at (1 - confidence)/2 and (1 + confidence)/2."""
    rng = np.random.default_rng(8)
    ref, trt = rng.random(50) < 0.5, rng.random(50) < 0.6
    diff = trt.astype(np.float64) - ref.astype(np.float64)
    for n_bootstrap, confidence in ((3000, 0.95), (1001, 0.8)):
        idx = np.random.default_rng(7).integers(0, 50, size=(n_bootstrap, 50))
        means = diff[idx].mean(axis=1)
        expected = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        got = paired_bootstrap_ci(ref, trt, n_bootstrap=n_bootstrap, confidence=confidence, seed=7)
        assert got == pytest.approx(tuple(expected), abs=1e-12)


def test_every_one_of_two_resamples_counts():
    """Two resamples of continuous scores: each percentile interpolates between both, so the
    interval is wrong unless both are the ones drawn."""
    rng = np.random.default_rng(9)
    ref, trt = rng.random(20), rng.random(20)
    got = paired_bootstrap_ci(ref, trt, n_bootstrap=2, confidence=0.9, seed=2)
    idx = np.random.default_rng(2).integers(0, 20, size=(2, 20))
    means = (trt - ref)[idx].mean(axis=1)
    assert means[0] != means[1]
    assert got == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])), abs=1e-12)


def test_one_resample_is_allowed_and_a_bool_or_float_count_is_not():
    ref, trt = [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]
    low, high = paired_bootstrap_ci(ref, trt, n_bootstrap=1, seed=4)
    assert low == high and low in {d / 4 for d in range(-4, 5)}  # one resampled mean
    for bad in (True, 100.0):
        with pytest.raises(ValueError, match="n_bootstrap must be a positive integer"):
            paired_bootstrap_ci(ref, trt, n_bootstrap=bad)


def test_compare_paired_passes_its_seed_on_and_names_a_bad_treatment():
    ref, trt = [True, False, True, True, False] * 4, [True, True, False, True, True] * 4
    out = compare_paired(ref, trt, n_bootstrap=500, seed=5)
    expected = paired_bootstrap_ci(ref, trt, n_bootstrap=500, seed=5)
    assert (out["questions_ci_low"], out["questions_ci_high"]) == expected
    with pytest.raises(ValueError, match="treatment outcomes must be true/false"):
        compare_paired([True, False], [0.5, 1.0])


@pytest.mark.parametrize("confidence", [1.0, 0.0])
def test_seed_interval_refuses_a_confidence_of_one_or_zero(confidence):
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        seed_interval([0.1, 0.2, 0.4], confidence=confidence)


def test_discordant_counts_of_float_outcomes():
    """0.0/1.0 outcomes (a float column) count like booleans: no bitwise arithmetic on them."""
    ref = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    trt = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    assert discordant_counts(ref, trt) == (2, 1)


# ---------------------------------------------------------------------------------------------
# tensors.topk: the second-level paths


def _streamed_mask(x: torch.Tensor, k: int, max_candidates: int) -> torch.Tensor:
    chunks = [x]
    threshold = threshold_from_histogram(histogram_hi(chunks), k, lambda: chunks, max_candidates)
    return MaskBuilder(threshold)(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_bucket_of_zeros_shortcut_holds_only_for_exact_zeros(dtype):
    """Bucket 0 (|x| bits < 2^15) holds zeros and the smallest fp32 denormals: one denormal there
    must send the search to the exact path (sorted reference: denormal first, zeros by index).
    A bf16 tensor's bucket 0 holds only zeros: the shortcut, counted on bf16 blocks."""
    cases = [({5: 3.0, 9: -3.0}, 6)]
    if dtype == torch.float32:
        cases += [({40: 1e-45}, 3), ({9: -1e-45}, 1)]  # bits 1: a denormal in bucket 0
    for entries, k in cases:
        x = torch.zeros(64, dtype=dtype)
        for i, v in entries.items():
            x[i] = v
        mask = _streamed_mask(x, k, max_candidates=0)
        assert torch.equal(mask, topk_mask_reference(x.float(), k))


def _bits(v: float) -> int:
    return int(torch.tensor(abs(v), dtype=torch.float32).view(torch.int32))


def test_threshold_fields_by_hand_on_every_path():
    """Threshold(bits, ties, k), hand-computed for each way threshold_from_histogram ends: keep
    nothing, everything, a whole top-level bucket, the sorted candidates, the low-bit counts
    (max_candidates=0), the bucket-of-zeros shortcut. `bits` is the cut (all entries equal to
    it are kept when `ties` would count them all, so the cut moves one pattern down)."""
    top = float.fromhex("0x1.00fffep+0")  # the last fp32 pattern in the bucket of 1.0
    x = torch.tensor([1.5, 0.0, 1.0, top, -1.0, 1.5, 0.0, 1.0, 0.25, 1.0, -top, 0.0])
    one, cut_below_one = _bits(1.0), _bits(1.0) - 1
    start_of_1_5 = (_bits(1.5) >> 15) << 15

    def threshold(k, max_candidates=MAX_CANDIDATES):
        return threshold_from_histogram(histogram_hi([x]), k, lambda: [x], max_candidates)

    for mc in (MAX_CANDIDATES, 0):  # sorted candidates, then low-bit counts
        assert threshold(0, mc) == Threshold(0x7FFFFFFF, 0, 0)
        assert threshold(12, mc) == Threshold(-1, 0, 12)
        assert threshold(2, mc) == Threshold(start_of_1_5 - 1, 0, 2)  # the bucket of 1.5, whole
        assert threshold(3, mc) == Threshold(_bits(top), 1, 3)  # one of the two `top`s
        assert threshold(4, mc) == Threshold(_bits(top) - 1, 0, 4)  # both: cut below them
        assert threshold(5, mc) == Threshold(one, 1, 5)  # the first of four 1.0s
        assert threshold(6, mc) == Threshold(one, 2, 6)
        assert threshold(8, mc) == Threshold(cut_below_one, 0, 8)  # the bucket of 1.0, whole
        assert threshold(9, mc) == Threshold((_bits(0.25) >> 15 << 15) - 1, 0, 9)  # of 0.25
        assert threshold(10, mc) == Threshold(0, 1, 10)  # one of the three zeros
    no_zeros = x[x != 0]  # everything kept: the cut is -1 even when no bucket-0 entry exists
    assert threshold_from_histogram(
        histogram_hi([no_zeros]), 9, lambda: [no_zeros], 0
    ) == Threshold(-1, 0, 9)
    largest = sorted(x.abs().tolist(), reverse=True)
    for k in range(13):
        t = threshold(k, 0)
        if 0 < k < 12:  # the cut lies between the k-th and the (k+1)-th largest |x|
            assert largest[k] <= t.value <= largest[k - 1], k
        else:
            assert t.value == 0.0
        assert torch.equal(MaskBuilder(t)(x), topk_mask_reference(x, k)), k


def test_the_zeros_shortcut_is_for_the_zero_bucket_only():
    """Bucket 1 (denormals with bits 2^15..2^16-1) as full as the count of zeros must not be
    taken for zeros: with few candidates allowed, the k-th value is found by counting."""
    denormal = torch.tensor(40_000, dtype=torch.int32).view(torch.float32)  # bucket 1
    x = torch.cat([torch.zeros(6), denormal.repeat(6), torch.tensor([2.0, -3.0])])
    for k in (3, 5, 8, 10):
        t = threshold_from_histogram(histogram_hi([x]), k, lambda: [x], max_candidates=2)
        assert torch.equal(MaskBuilder(t)(x), topk_mask_reference(x, k)), k
    assert topk_count(1, 0.5) == 1 and topk_count(1, 1e-9) == 1 and topk_count(0, 0.5) == 0


def test_the_low_bit_histogram_of_a_large_block_equals_the_sorted_reference():
    """Blocks of 2^15 entries and more are counted by torch's bincount (numpy below)."""
    x = torch.randn(40_000, generator=torch.Generator().manual_seed(3))
    for k in (1, 777, 20_000):
        assert torch.equal(_streamed_mask(x, k, max_candidates=0), topk_mask_reference(x, k))


def test_sum_squares_is_bit_stable_on_both_sides_of_the_switch():
    """The norms in every task vector's metadata come from here: below 2^15 entries a float64
    dot product, from 2^15 on torch's norm. Moving the switch changes those bytes."""
    for n in (32_767, 32_768):
        x = torch.randn(n, generator=torch.Generator().manual_seed(11))
        a = x.numpy().astype(np.float64)
        expected = float(a @ a) if n < 32_768 else float(torch.linalg.vector_norm(x)) ** 2
        assert sum_squares(x) == expected, n


@pytest.mark.parametrize("n", [10, 32_767, 32_768, 100_000])
def test_sum_squares_equals_float64_below_and_above_the_numpy_torch_switch(n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    exact = float((x.double() ** 2).sum())
    assert sum_squares(x) == pytest.approx(exact, rel=1e-6)
    assert sum_squares(x.view(-1, 2) if n % 2 == 0 else x) == pytest.approx(exact, rel=1e-6)


def test_ties_of_the_one_pass_path_fill_blocks_in_index_order():
    """Mostly exact zeros over three blocks of 2^20: the k-th value is 0, the ties fill whole
    blocks, then part of a later one (hand-built expectation: lowest indices first)."""
    block = 1 << 20
    n = 2 * block + 100
    x = torch.zeros(n)
    big = torch.cat([torch.arange(0, 50_000, 1000), block + torch.arange(7, 50_007, 1000)])
    big = torch.cat([big, 2 * block + torch.arange(0, 100, 10)])  # 110 nonzero entries
    x[big] = torch.linspace(1.0, 2.0, big.numel())
    is_zero = (x == 0).numpy()
    for k in (block + 500, n - 50):
        expected = ~is_zero
        zeros = np.flatnonzero(is_zero)[: k - big.numel()]
        expected[zeros] = True
        mask = topk_mask(x, k).numpy()
        assert mask.sum() == k and np.array_equal(mask, expected), k


@pytest.mark.parametrize("case", ["tied", "bracket"])
def test_the_one_pass_path_declines_when_its_sample_misleads_it(case):
    """Adversarial input for the sampled bracket: the entries at the (deterministic) sample
    positions are zeros or tiny, everything else is large. The sample's guess of the k-th value
    is then wrong, and the one-pass path must notice and leave the tensor to the exact path."""
    from deltalab.tensors.topk import _sampled_topk_mask

    n = 1 << 20
    g = torch.Generator().manual_seed(0)
    x = 1.0 + torch.rand(n, generator=g)
    sampled = torch.randint(n, (1 << 16,), generator=torch.Generator().manual_seed(n))
    x[sampled] = 0.0 if case == "tied" else 1e-3 * torch.rand(sampled.numel(), generator=g)
    k = n // 2
    assert _sampled_topk_mask(x, k) is None
    assert torch.equal(topk_mask(x, k), topk_mask_reference(x, k))


def test_the_one_pass_path_declines_when_exactly_k_entries_lie_above_its_bracket():
    """Sampled positions hold 1.0 and 2.0 (the bracket is [1, 2]); k unsampled entries hold 3.0:
    nothing is left to take from the bracket (need = 0), so the path declines."""
    from deltalab.tensors.topk import _SAMPLE, _sampled_topk_mask

    n, k = 1 << 20, 1 << 19
    sampled_at = torch.randint(n, (_SAMPLE,), generator=torch.Generator().manual_seed(n))
    x = torch.ones(n)
    x[sampled_at[:31_500]] = 2.0
    unsampled = torch.ones(n, dtype=torch.bool)
    unsampled[sampled_at] = False
    x[torch.nonzero(unsampled).flatten()[:k]] = 3.0
    assert int((x > 2).sum()) == k
    assert _sampled_topk_mask(x, k) is None
    assert torch.equal(topk_mask(x, k), x > 2)


def test_k_outside_zero_to_n_on_a_large_tensor_keeps_nothing_or_everything():
    x = torch.randn((1 << 20) + 3, generator=torch.Generator().manual_seed(5))
    assert topk_mask(x, x.numel() + 1).all() and topk_mask(x, x.numel()).all()
    assert not topk_mask(x, 0).any() and not topk_mask(x, -1).any()


def test_mask_builder_writes_into_the_buffer_it_is_given():
    x = torch.tensor([[0.5, -2.0, 1.0], [2.0, 0.1, -1.0]])  # ties at 2 and at 1: lowest index
    out = torch.zeros(6, dtype=torch.bool)
    mask = MaskBuilder(find_threshold(lambda: (x,), 3))(x, out=out)
    expected = torch.tensor([[False, True, True], [True, False, False]])
    assert torch.equal(mask, expected) and torch.equal(out.view(2, 3), expected)


def test_energy_of_tied_entries_counts_their_square():
    x = torch.tensor([3.0, -1.0, 3.0, 3.0, 0.5])
    assert energy_above([x], Threshold(bits=0x40400000, ties=2, k=2)) == 18.0  # 3.0: two ties
    assert energy_above([x], Threshold(bits=0x3F800000 - 1, ties=0, k=4)) == 28.0


@pytest.mark.parametrize("n", [1 << 20, (1 << 20) + 3, (1 << 21) + 5])
def test_the_one_pass_path_resolves_ordinary_large_tensors_itself(n, monkeypatch):
    """From 2^20 entries on, k = 1 to n - 1 of Gaussian, bf16-delta (ties, zeros), all-zero and
    few-valued tensors: the sampled one-pass path returns the exact mask itself rather than
    declining to the histogram path (its purpose: one pass instead of two or three). Three
    blocks of 2^20: candidates found in later blocks keep their global index. k = n - 1008 puts
    the sample's lower bracket exactly one past the end of the sample (n = 2^20 and 2^20 + 3)."""
    import deltalab.tensors.topk as topk
    from tests.test_deltas_topk import CASES

    def no_histogram(*args, **kwargs):
        raise AssertionError("topk_mask fell back to the histogram path")

    for case, make in CASES.items():
        x = make(n)
        order = torch.sort(x.double().abs(), descending=True, stable=True).indices
        for k in (1, n // 100, 3 * n // 10, n - n // 30, n - 1008, n - 1):
            expected = torch.zeros(n, dtype=torch.bool)
            expected[order[:k]] = True
            mask = topk._sampled_topk_mask(x, k)
            assert mask is not None and mask.dtype == torch.bool, (case, k)
            assert torch.equal(mask, expected), (case, k)
            with monkeypatch.context() as m:  # and topk_mask takes that path
                m.setattr(topk, "find_threshold", no_histogram)
                assert torch.equal(topk.topk_mask(x.view(-1, 1), k).view(-1), expected)


def test_large_bf16_tensors_take_the_exact_path():
    """The one-pass path reads float32 bits; a bf16 tensor of 2^20+ entries must not enter it."""
    x = torch.randn((1 << 20) + 3, generator=torch.Generator().manual_seed(1)).bfloat16()
    for k in (1, 12_345, 700_001):
        assert torch.equal(topk_mask(x, k), topk_mask_reference(x.float(), k)), k


# ---------------------------------------------------------------------------------------------
# merging.disk: --max-shard-size and --vector parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("100KB", 100 * 10**3),
        ("2TB", 2 * 10**12),
        ("2GiB", 2 * 2**30),
        ("3MiB", 3 * 2**20),
        ("4KiB", 4 * 2**10),
        ("10B", 10),
        ("1024", 1024),
        (" 1.5gb ", 1_500_000_000),
        ("0.5kib", 512),
    ],
)
def test_parse_size_hand_computed(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["abc", "GB", "5XB", "1.5", ""])
def test_parse_size_rejects_what_is_not_a_size(text):
    with pytest.raises(ConfigError, match="invalid size"):
        parse_size(text)


# ---------------------------------------------------------------------------------------------
# tensors.topk.log2_histogram


def test_histogram_of_several_large_blocks_and_chunks_counts_every_entry():
    """Blocks of 2^20 (above the numpy/torch switch) from two chunks: every block adds to the
    histogram (brute force: numpy's bincount of the top 16 bits of |x|)."""
    g = torch.Generator().manual_seed(3)
    chunks = [torch.randn(1 << 20, generator=g) * 4, torch.randn(3, (1 << 19) + 5, generator=g)]
    bits = np.concatenate([c.reshape(-1).abs().numpy().view(np.int32) for c in chunks])
    expected = np.bincount(bits >> 15, minlength=1 << 16)
    hist = histogram_hi(chunks)
    assert hist.dtype == np.int64 and hist.sum() == bits.size
    assert np.array_equal(hist, expected)


def test_log2_histogram_hand_computed():
    f32_max = float(torch.finfo(torch.float32).max)
    tiny = float(torch.finfo(torch.float32).tiny)  # 2**-126, the smallest normal
    x = torch.tensor([1.0, -1.3, 1.5, 1.9, 2.0, 0.0, 1e-45, tiny, f32_max, float("inf")])
    hist = histogram_hi([x])
    # four buckets an octave: mantissa quarters [1, 1.25) [1.25, 1.5) [1.5, 1.75) [1.75, 2)
    edges, counts = log2_histogram(hist)
    assert edges == [tiny, 1.0, 1.25, 1.5, 1.75, 2.0, 1.75 * 2.0**127]
    assert counts == [1, 1, 1, 1, 1, 1, 1]  # zero, denormal and inf dropped
    edges, counts = log2_histogram(hist, per_octave=2)
    assert edges == [tiny, 1.0, 1.5, 2.0, 1.5 * 2.0**127]
    assert counts == [1, 2, 2, 1, 1]
    edges, counts = log2_histogram(hist, per_octave=1)
    assert edges == [tiny, 1.0, 2.0, 2.0**127]
    assert counts == [1, 4, 1, 1]


# ---------------------------------------------------------------------------------------------
# Task vectors of hand-made checkpoints: exact values (multiples of 1/64), exact zeros, ties


CONFIG = '{"torch_dtype":"float32","tie_word_embeddings":false}'  # compact: a rewrite shows


def _checkpoint(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors")
    (path / "config.json").write_text(CONFIG)
    (path / "tokenizer_config.json").write_text("{}")  # a merge base must come with a tokenizer
    return path


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """A base (float32 mostly, one bf16 and one int tensor) and two finetunes whose deltas are
    exact in fp32: multiples of 1/64 with many exact zeros, ties and both signs."""
    root = tmp_path_factory.mktemp("handmade")
    g = torch.Generator().manual_seed(0)
    # float32 holds most entries, though the bf16 tensor is larger than any float32 one
    shapes = {"w": (24, 16), "b": (40,), "a": (12, 10), "h": (20, 24)}
    base = {n: torch.randint(-64, 64, s, generator=g).float() / 8 for n, s in shapes.items()}
    base["h"] = base["h"].bfloat16()
    base["steps"] = torch.arange(5)  # not a float tensor: not in the vectors, copied as it is
    paths = {"base": _checkpoint(root / "base", base)}
    deltas = {}
    for key, seed in (("a", 1), ("b", 2)):
        gen = torch.Generator().manual_seed(seed)
        ft = dict(base)
        for n, s in shapes.items():
            d = torch.randint(-6, 7, s, generator=gen).float() / 64
            d = d * (torch.rand(s, generator=gen) < 0.7)  # ~30% exact zeros
            ft[n] = (base[n].float() + d).to(base[n].dtype)
        paths[key] = _checkpoint(root / key, ft)
        deltas[key] = {n: ft[n].double() - base[n].double() for n in shapes}  # exact
    return root, paths, deltas


def _brute_force_mask(tau: torch.Tensor, ratio: float) -> np.ndarray:
    flat = tau.reshape(-1).double().numpy()
    n = flat.size
    k = n if ratio == 1.0 else min(n, max(1, round(ratio * n)))
    order = np.lexsort((np.arange(n), -np.abs(flat)))  # largest |x| first, ties: lowest index
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask


def _vector(root, paths, name, key, ratio, rescale="none"):
    out = root / f"{name}.safetensors"
    if not out.exists():
        build_task_vectors(
            Checkpoint(paths["base"]), [(Checkpoint(paths[key]), out)], ratio, rescale=rescale,
            progress=False,
        )  # fmt: skip
    return TaskVector(out)


@pytest.mark.parametrize(
    ("ratio_a", "ratio_b", "rescale", "chunk"),
    [
        (0.3, 0.5, "none", 2**25),
        (0.3, 1.0, "tensor", 2**25),
        (1.0, 0.3, "none", 2**25),
        (0.4, 0.25, "tensor", 64),
    ],
)
def test_compare_vectors_equals_brute_force(handmade, ratio_a, ratio_b, rescale, chunk):
    root, paths, deltas = handmade
    va = _vector(root, paths, f"a{ratio_a}{rescale}", "a", ratio_a, rescale)
    vb = _vector(root, paths, f"b{ratio_b}{rescale}", "b", ratio_b, rescale)
    both = conflicts = common = either = total = 0
    norm2 = [0.0, 0.0]
    full2 = [0.0, 0.0]
    kept2 = [0.0, 0.0]
    for name in deltas["a"]:
        da, db = deltas["a"][name].double(), deltas["b"][name].double()
        ma, mb = _brute_force_mask(da, ratio_a), _brute_force_mask(db, ratio_b)
        xa, xb = da.reshape(-1).numpy(), db.reshape(-1).numpy()
        sa, sb = va.entries[name]["scale"], vb.entries[name]["scale"]
        if rescale == "tensor":  # ‖τ‖ / ‖τ_k‖ per tensor, from float64
            assert sa == pytest.approx(math.sqrt((xa**2).sum() / (xa[ma] ** 2).sum()), rel=1e-6)
        kept = ma & mb
        nonzero = kept & (xa != 0) & (xb != 0)
        both += int(nonzero.sum())
        conflicts += int((nonzero & (np.sign(xa) != np.sign(xb))).sum())
        common += int(kept.sum())
        either += int((ma | mb).sum())
        total += xa.size
        norm2[0] += float(((sa * xa[ma]) ** 2).sum())
        norm2[1] += float(((sb * xb[mb]) ** 2).sum())
        full2[0] += float((xa**2).sum())
        full2[1] += float((xb**2).sum())
        kept2[0] += float((xa[ma] ** 2).sum())
        kept2[1] += float((xb[mb] ** 2).sum())
    assert 0 < conflicts < both <= common < either <= total  # every count matters
    if 1.0 in (ratio_a, ratio_b):  # a dense vector keeps its exact zeros: they have no sign
        assert both < common and either == total
    stats = compare_vectors(va, vb, chunk_elements=chunk)
    assert stats["kept_by_both"] == both
    assert stats["sign_conflict"] == pytest.approx(conflicts / both, rel=1e-12)
    assert stats["sign_conflict_of_all"] == pytest.approx(conflicts / total, rel=1e-12)
    assert stats["overlap"] == pytest.approx(common / either, rel=1e-12)
    assert stats["norm_a"] == pytest.approx(math.sqrt(norm2[0]), rel=1e-6)
    assert stats["norm_b"] == pytest.approx(math.sqrt(norm2[1]), rel=1e-6)
    assert stats["norm_ratio"] == pytest.approx(math.sqrt(norm2[0] / norm2[1]), rel=1e-6)
    assert stats["dense_norm_ratio"] == pytest.approx(math.sqrt(full2[0] / full2[1]), rel=1e-6)
    assert stats["energy_kept_a"] == pytest.approx(kept2[0] / full2[0], rel=1e-6)
    assert stats["energy_kept_b"] == pytest.approx(kept2[1] / full2[1], rel=1e-6)
    assert (stats["top_ratio_a"], stats["top_ratio_b"]) == (ratio_a, ratio_b)


def test_compare_with_a_zero_vector_has_no_conflicts_and_infinite_ratios(handmade):
    """b = the base itself: τ_b = 0 everywhere, so nothing kept by both has a sign, ‖τ_b‖ = 0."""
    root, paths, _ = handmade
    va = _vector(root, paths, "a0.3none", "a", 0.3)
    zero = _vector(root, paths, "zero0.3none", "base", 0.3)
    stats = compare_vectors(va, zero)
    assert stats["kept_by_both"] == 0 and stats["sign_conflict"] == 0.0
    assert stats["sign_conflict_of_all"] == 0.0 and 0 < stats["overlap"] < 1
    assert stats["norm_b"] == 0.0 and stats["norm_ratio"] == math.inf
    assert stats["dense_norm_ratio"] == math.inf
    assert stats["energy_kept_b"] == 0.0 and 0 < stats["energy_kept_a"] < 1
    back = compare_vectors(zero, va)
    assert back["norm_ratio"] == 0.0 and back["dense_norm_ratio"] == 0.0


@pytest.mark.parametrize(("ratio", "chunk"), [(1.0, 2**25), (0.5, 2**25), (1.0, 8), (0.5, 8)])
def test_a_delta_that_overflows_names_the_finetuned_file_and_writes_nothing(tmp_path, ratio, chunk):
    """Finite weights whose difference is not: -3e38 → 3e38 overflows fp32 (in memory, and
    streamed in row chunks of 8)."""
    from deltalab.errors import CheckpointError

    w = torch.arange(16.0)
    base = _checkpoint(tmp_path / "base", {"w": torch.cat([w[:9], torch.tensor([-3e38]), w[10:]])})
    ft = _checkpoint(tmp_path / "ft", {"w": torch.cat([w[:9], torch.tensor([3e38]), w[10:]])})
    out = tmp_path / "v.safetensors"
    where = r"/ft/model\.safetensors"  # the file, on the dense and on the sparse path
    with pytest.raises(CheckpointError, match=where + ": tensor 'w': the delta overflows to Inf"):
        build_task_vectors(Checkpoint(base), [(Checkpoint(ft), out)], ratio, chunk_elements=chunk,
                           progress=False)  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize(("ratio", "chunk"), [(1.0, 2**25), (0.5, 2**25), (1.0, 8), (0.5, 8)])
def test_zero_element_tensors_pass_through_vectors_merge_and_compare(tmp_path, ratio, chunk):
    """A (0, 4) tensor (an empty embedding of added tokens, say) between real ones: k = 0, norm 0,
    the other tensors' vectors unchanged, and the merge keeps its shape."""
    from deltalab.merging.disk import merge

    w, v = torch.arange(16.0), torch.linspace(-1, 1, 6)
    base = {"a": v, "e": torch.zeros(0, 4), "w": w}
    ft = {"a": v * 3, "e": torch.zeros(0, 4), "w": w.flip(0)}
    b, f = _checkpoint(tmp_path / "base", base), _checkpoint(tmp_path / "ft", ft)
    out = tmp_path / "v.safetensors"
    build_task_vectors(Checkpoint(b), [(Checkpoint(f), out)], ratio, chunk_elements=chunk,
                       progress=False)  # fmt: skip
    vector = TaskVector(out)
    assert vector.entries["e"]["k"] == 0 and vector.entries["e"]["norm"] == 0.0
    for name in ("a", "w"):
        tau = (ft[name] - base[name]).double()
        assert vector.entries[name]["norm"] == pytest.approx(float(tau.norm()), rel=1e-6)
    assert compare_vectors(vector, vector)["sign_conflict"] == 0.0
    merge(Checkpoint(b), [(vector, 1.0)], tmp_path / "merged", progress=False)
    with safe_open(tmp_path / "merged" / "model.safetensors", "pt") as m:
        assert m.get_slice("e").get_shape() == [0, 4]
        if ratio == 1.0:
            assert all(torch.equal(m.get_tensor(n), ft[n]) for n in ("a", "w"))


def test_vectors_covering_different_tensors_of_one_base_are_refused_by_name(tmp_path):
    """A finetune that stores `b` as integers has no task vector for `b`: comparing it with a
    vector that has `b` is refused, naming the tensor (not "a different base", X vs X)."""
    from deltalab.errors import CheckpointError

    g = torch.Generator().manual_seed(2)
    w = {n: torch.randn(40, generator=g) for n in ("a", "b", "c")}
    base = _checkpoint(tmp_path / "base", w)
    one = _checkpoint(tmp_path / "one", {n: v + 1 for n, v in w.items()})
    two = _checkpoint(tmp_path / "two", {"a": w["a"] - 1, "b": torch.arange(40), "c": w["c"]})
    outs = [tmp_path / "one.safetensors", tmp_path / "two.safetensors"]
    for ft, out in zip((one, two), outs, strict=True):
        build_task_vectors(Checkpoint(base), [(Checkpoint(ft), out)], 0.5, progress=False)
    assert "b" not in TaskVector(outs[1]).entries
    with pytest.raises(
        CheckpointError, match=r"covers other tensors of .* \(in only one of them: \['b'\]\)"
    ):
        compare_vectors(TaskVector(outs[0]), TaskVector(outs[1]))


def test_vectors_of_nothing_but_empty_tensors_compare_as_zero(tmp_path):
    """No entry in either vector: the shares over entries are 0, not a division by zero."""
    b = _checkpoint(tmp_path / "base", {"e": torch.zeros(0, 4)})
    f = _checkpoint(tmp_path / "ft", {"e": torch.zeros(0, 4)})
    out = tmp_path / "v.safetensors"
    build_task_vectors(Checkpoint(b), [(Checkpoint(f), out)], 0.5, progress=False)
    stats = compare_vectors(TaskVector(out), TaskVector(out))
    assert stats["sign_conflict_of_all"] == 0.0 and stats["overlap"] == 0.0
    assert stats["sign_conflict"] == 0.0 and stats["kept_by_both"] == 0


@pytest.mark.parametrize("chunk", [2**25, 64])
def test_norms_and_bf16_values_equal_float64_brute_force(handmade, tmp_path, chunk):
    """‖τ‖ and ‖τ_k‖ in the metadata, in memory and streamed; dense bf16 values are τ rounded."""
    _, paths, deltas = handmade
    sparse, dense = tmp_path / "s.safetensors", tmp_path / "d.safetensors"
    base, ft = Checkpoint(paths["base"]), Checkpoint(paths["a"])
    for out, ratio in ((sparse, 0.3), (dense, 1.0)):
        build_task_vectors(
            base, [(ft, out)], ratio, values_dtype="bfloat16", chunk_elements=chunk, progress=False
        )
    vs, vd = TaskVector(sparse), TaskVector(dense)
    for name, tau in deltas["a"].items():
        kept = tau.reshape(-1).numpy()[_brute_force_mask(tau, 0.3)]
        assert vs.entries[name]["norm"] == pytest.approx(float(tau.norm()), rel=1e-6)
        assert vs.entries[name]["sparse_norm"] == pytest.approx(np.sqrt((kept**2).sum()), rel=1e-6)
        assert torch.equal(vd.dense(name), tau.to(torch.bfloat16).float()), name


@pytest.mark.parametrize("rescale", ["tensor", "global"])
def test_rescaling_a_zero_vector_leaves_the_scale_at_one(handmade, rescale):
    root, paths, _ = handmade
    zero = _vector(root, paths, f"zero0.3{rescale}", "base", 0.3, rescale)
    assert {e["scale"] for e in zero.entries.values()} == {1.0}
    assert {e["sparse_norm"] for e in zero.entries.values()} == {0.0}


def test_a_top_ratio_of_zero_is_a_config_error(handmade, tmp_path):
    _, paths, _ = handmade
    with pytest.raises(ConfigError, match=r"top ratio must be in \(0, 1\], got 0.0"):
        build_task_vectors(Checkpoint(paths["base"]), [(Checkpoint(paths["a"]), tmp_path / "v")],
                           0.0, progress=False)  # fmt: skip


@pytest.mark.parametrize("rows", [20, 26])
def test_a_resized_finetune_contributes_only_the_shared_rows(tmp_path, capsys, rows):
    """A vocabulary resized to `rows` rows: τ = ft − base on the rows both have, 0 beyond."""
    g = torch.Generator().manual_seed(5)
    base_w = torch.randint(-64, 64, (24, 16), generator=g).float() / 8
    ft_w = torch.randint(-64, 64, (rows, 16), generator=g).float() / 8
    base = _checkpoint(tmp_path / "base", {"w": base_w})
    ft = _checkpoint(tmp_path / "ft", {"w": ft_w})
    out = tmp_path / "v.safetensors"
    build_task_vectors(Checkpoint(base), [(Checkpoint(ft), out)], 1.0, progress=False)
    assert "resized tensors ['w']: only the rows shared" in capsys.readouterr().err
    expected = torch.zeros(24, 16)
    shared = min(rows, 24)
    expected[:shared] = ft_w[:shared] - base_w[:shared]
    vector = TaskVector(out)
    assert vector.entries["w"]["finetuned_rows"] == rows
    assert torch.equal(vector.dense("w"), expected)
    assert vector.entries["w"]["norm"] == pytest.approx(float(expected.double().norm()), rel=1e-9)


def test_a_tensor_one_finetune_stores_as_int_is_left_out_of_that_vector_only(tmp_path):
    w, b = torch.arange(32.0).view(4, 8) / 8, torch.arange(8.0) / 4
    base = _checkpoint(tmp_path / "base", {"b": b, "w": w})
    ints = _checkpoint(tmp_path / "ints", {"b": b.long(), "w": w + 1})
    full = _checkpoint(tmp_path / "full", {"b": b + 2, "w": w + 3})
    outs = [tmp_path / "i.safetensors", tmp_path / "f.safetensors"]
    build_task_vectors(Checkpoint(base), [(Checkpoint(ints), outs[0]), (Checkpoint(full), outs[1])],
                       1.0, progress=False)  # fmt: skip
    vi, vf = TaskVector(outs[0]), TaskVector(outs[1])
    assert set(vi.entries) == {"w"} and set(vf.entries) == {"b", "w"}
    assert torch.equal(vf.dense("b"), torch.full((8,), 2.0))
    assert torch.equal(vf.dense("w"), torch.full((4, 8), 3.0))


def test_the_file_metadata_is_the_documented_record(handmade):
    root, paths, _ = handmade
    vector = _vector(root, paths, "a0.3none", "a", 0.3)
    meta = dict(vector.meta)
    tensors = json.loads(meta.pop("tensors"))
    assert set(tensors) == {"w", "b", "a", "h"}
    assert all("finetuned_rows" not in e for e in tensors.values())  # nothing was resized
    for key in ("base_sha256", "finetuned_sha256"):
        assert len(meta.pop(key)) == 64
    assert meta == {
        "format": "deltalab.task_vector",
        "format_version": "1",
        "deltalab_version": __import__("deltalab").__version__,
        "base": str(paths["base"]),
        "finetuned": str(paths["a"]),
        "top_ratio": "0.3",
        "rescale": "none",
        "values_dtype": "F32",
        "mask_bitorder": "little",
    }


def _rewrite(src: Path, dst: Path, tensors=lambda t: t, meta=lambda m: m) -> Path:
    with safe_open(str(src), "pt") as f:
        data = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - no __iter__
        metadata = f.metadata()
    save_file(tensors(data), dst, metadata=meta(metadata))
    return dst


def test_a_vector_file_with_a_missing_or_misshaped_tensor_is_refused(handmade, tmp_path):
    from deltalab.errors import CheckpointError

    root, paths, _ = handmade
    src = _vector(root, paths, "a0.3none", "a", 0.3).path
    short = _rewrite(src, tmp_path / "s.safetensors", lambda t: t | {"w:values": t["w:values"][1:]})
    with pytest.raises(CheckpointError, match=r"tensor 'w': w:values missing or bad"):
        TaskVector(short)
    gone = _rewrite(src, tmp_path / "g.safetensors", lambda t: {k: v for k, v in t.items()
                                                                if k != "b:mask"})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"tensor 'b': b:mask missing or bad"):
        TaskVector(gone)


def test_a_scale_of_two_is_applied(handmade, tmp_path):
    root, paths, _ = handmade
    src = _vector(root, paths, "a0.3none", "a", 0.3)

    def doubled(meta):
        tensors = json.loads(meta["tensors"])
        for e in tensors.values():
            e["scale"] = 2.0
        return meta | {"tensors": json.dumps(tensors)}

    twice = TaskVector(_rewrite(src.path, tmp_path / "x2.safetensors", meta=doubled))
    for name in src.entries:
        assert torch.equal(twice.dense(name), 2 * src.dense(name)), name


def test_load_vectors_reads_path_and_scale(handmade, tmp_path):
    root, paths, _ = handmade
    path = _vector(root, paths, "a0.3none", "a", 0.3).path
    (vector, scale), (plain, one) = load_vectors([f"{path}:1.25", str(path)])
    assert (vector.path, scale) == (path, 1.25) and (plain.path, one) == (path, 1.0)
    colon = tmp_path / "v:2.safetensors"  # an existing file whose name holds a colon
    colon.write_bytes(path.read_bytes())
    ((vector, scale),) = load_vectors([str(colon)])
    assert (vector.path, scale) == (colon, 1.0)
    ((vector, scale),) = load_vectors([f"{colon}:0.5"])  # the scale follows the last colon
    assert (vector.path, scale) == (colon, 0.5)
    with pytest.raises(ConfigError, match="is not a number"):
        load_vectors([f"{path}:big"])
    for bad in ("inf", "nan"):
        with pytest.raises(ConfigError, match="must be finite"):
            load_vectors([f"{path}:{bad}"])


def test_packed_mask_and_values_on_disk_equal_brute_force(handmade):
    root, paths, deltas = handmade
    vector = _vector(root, paths, "a0.3none", "a", 0.3)
    with safe_open(str(vector.path), "pt") as f:
        for name, d in deltas["a"].items():
            mask = _brute_force_mask(d, 0.3)
            assert np.array_equal(
                f.get_tensor(f"{name}:mask").numpy(), np.packbits(mask, bitorder="little")
            )
            values = d.reshape(-1).numpy()[mask]
            assert np.array_equal(f.get_tensor(f"{name}:values").numpy(), values)


@pytest.mark.parametrize("dtype", [None, "float32", "bfloat16"])
def test_merge_equals_float64_reference_with_its_record_and_config(handmade, tmp_path, dtype):
    """base + 1.5·τ_a (top 30%) − 0.5·τ_b (dense), in row chunks: exact, since every value is a
    small multiple of 1/128; the bf16 output is the float64 sum rounded once."""
    from deltalab.merging.disk import merge
    from tests.deltas_fixtures import state_dict

    root, paths, deltas = handmade
    va = _vector(root, paths, "a0.3none", "a", 0.3)
    vb = _vector(root, paths, "b1.0none", "b", 1.0)
    out = tmp_path / "m"
    info = merge(Checkpoint(paths["base"]), [(va, 1.5), (vb, -0.5)], out, dtype=dtype,
                 chunk_elements=64, progress=False)  # fmt: skip
    base, merged = state_dict(paths["base"]), state_dict(out)
    assert set(merged) == set(base)
    assert torch.equal(merged["steps"], base["steps"])
    for name, tau in deltas["a"].items():
        mask = torch.from_numpy(_brute_force_mask(tau, 0.3)).view(tau.shape)
        exact = base[name].double() + 1.5 * tau * mask - 0.5 * deltas["b"][name]
        want = {None: base[name].dtype, "float32": torch.float32, "bfloat16": torch.bfloat16}
        assert torch.equal(merged[name], exact.to(want[dtype])), name
    config = (out / "config.json").read_text()
    if dtype == "bfloat16":  # the weights' dtype changed: config.json says so
        assert '"torch_dtype": "bfloat16"' in config
    else:  # the base is mostly float32: its config is copied byte for byte
        assert config == CONFIG
    expected = {
        "deltalab_version": __import__("deltalab").__version__,
        "base": str(paths["base"]),
        "vectors": [
            {"path": str(v.path), "scale": s, "finetuned": str(paths[k]), "top_ratio": r,
             "base_sha256": v.meta["base_sha256"]}
            for v, s, k, r in ((va, 1.5, "a", 0.3), (vb, -0.5, "b", 1.0))
        ],
        "dtype": dtype or "base",
    }  # fmt: skip
    assert info == expected
    assert json.loads((out / "deltalab_merge.json").read_text()) == expected


def test_untouched_tensors_keep_their_nan_payloads_bit_for_bit(tmp_path):
    """A float tensor no vector touches is copied, not round-tripped through fp32 (which would
    rewrite NaN payloads: bf16 0x7F81 comes back as 0xFFFF)."""
    from deltalab.merging.disk import merge
    from tests.deltas_fixtures import state_dict

    bf16 = torch.tensor([0x7F81, 0x3F80, -0x0080], dtype=torch.int16).view(torch.bfloat16)
    fp16 = torch.tensor([0x7C01, 0x3C00], dtype=torch.int16).view(torch.float16)
    base = _checkpoint(tmp_path / "base", {"b": bf16, "h": fp16, "w": torch.ones(4)})
    merge(Checkpoint(base), [], tmp_path / "m", progress=False)
    merged = state_dict(tmp_path / "m")
    assert torch.equal(merged["b"].view(torch.int16), bf16.view(torch.int16))
    assert torch.equal(merged["h"].view(torch.int16), fp16.view(torch.int16))


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_merge_of_no_vectors_copies_or_only_casts_the_base(handmade, tmp_path, dtype):
    """Tensors no vector touches, in several row chunks: copied bit for bit, or cast once."""
    from deltalab.merging.disk import merge
    from tests.deltas_fixtures import state_dict

    _, paths, _ = handmade
    info = merge(Checkpoint(paths["base"]), [], tmp_path / "m", dtype=dtype, chunk_elements=64,
                 progress=False)  # fmt: skip
    assert info["vectors"] == []
    base, merged = state_dict(paths["base"]), state_dict(tmp_path / "m")
    assert set(merged) == set(base)
    for name, w in base.items():
        want = w.to(torch.bfloat16) if dtype and w.is_floating_point() else w
        assert merged[name].dtype == want.dtype and torch.equal(merged[name], want), name
