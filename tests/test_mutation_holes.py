"""Tests for mistakes a mutation audit found the suite let through (issue 12, first part): each
compares with an independent reference (brute force, bytes on disk, a hand-made case)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from deltalab.deltas.io import Checkpoint, matrix_shape, row_chunks
from deltalab.deltas.topk import topk_count
from deltalab.deltas.vectors import TaskVector, build_task_vectors
from deltalab.evaluation.stats import paired_bootstrap_ci
from tests.deltas_fixtures import build, finetune, save


@pytest.fixture(scope="module")
def vector(tmp_path_factory):
    root = tmp_path_factory.mktemp("holes")
    model = build("gpt2", seed=0)
    base = save(model, root / "base")
    ft = save(finetune(model, seed=1), root / "ft")
    out = root / "v.safetensors"
    build_task_vectors(Checkpoint(base), [(Checkpoint(ft), out)], 0.3, progress=False)
    return base, ft, out


def test_sparse_chunks_read_in_several_pieces_equal_one_piece(vector):
    """Real tensors over 2^20 entries are read in row chunks: the values cursor must advance."""
    _, _, path = vector
    tv = TaskVector(path)
    name = "transformer.wte.weight"
    shape = tv.entries[name]["shape"]
    ranges = row_chunks(*matrix_shape(shape), 8 * shape[1])  # several row chunks
    assert len(ranges) > 2
    pieces = torch.cat(list(tv.chunks(name, ranges)))
    torch.testing.assert_close(pieces.view(shape), tv.dense(name), rtol=0, atol=0)


def test_the_packed_mask_on_disk_is_the_brute_force_top_k_in_little_bit_order(vector):
    base, ft, path = vector
    name = "transformer.h.0.mlp.c_fc.weight"
    with safe_open(f"{base}/model.safetensors", "pt") as b, safe_open(f"{ft}/model.safetensors",
                                                                         "pt") as f:  # fmt: skip
        delta = (f.get_tensor(name).double() - b.get_tensor(name).double()).reshape(-1)
    k = topk_count(delta.numel(), 0.3)
    order = np.lexsort((np.arange(delta.numel()), -delta.abs().numpy()))  # ties: lowest index
    expected = np.zeros(delta.numel(), dtype=bool)
    expected[order[:k]] = True
    with safe_open(str(path), "pt") as v:
        on_disk = v.get_tensor(f"{name}:mask").numpy()
    assert np.array_equal(on_disk, np.packbits(expected, bitorder="little"))


def test_topk_count_rounds_a_fractional_k():
    assert topk_count(10, 0.36) == 4  # round(3.6), not int(3.6)
    assert topk_count(10, 0.01) == 1  # never empty
    assert topk_count(7, 1.0) == 7


def test_the_bootstrap_resamples_the_last_question_too():
    """Only the last pair differs: an index range that stops at k−1 would give an interval of
    exactly 0 on both sides."""
    reference = [0.0] * 5
    treatment = [0.0] * 4 + [1.0]
    low, high = paired_bootstrap_ci(reference, treatment, n_bootstrap=2000, seed=0)
    assert low == 0.0 and high >= 0.2


def test_pooled_seeds_resample_whole_questions_and_report_that_interval():
    """Two seeds that agree question by question: the pooled interval must be the cluster
    bootstrap over questions (wider than treating the 2n pairs as independent)."""
    from deltalab.evaluation.compare import build_compare
    from deltalab.evaluation.params import CompareParams

    rng = np.random.default_rng(0)
    n = 60
    base = rng.random(n) < 0.4
    treat = np.where(rng.random(n) < 0.7, base, rng.random(n) < 0.6)

    def records(correct):
        return [
            {"id": f"q{i}", "task": "gsm8k", "family": "gsm8k", "gold": "1", "correct": bool(c)}
            for i, c in enumerate(correct)
        ]

    conditions = (("baseline", base), ("mul_tokens", treat))
    preds = {(cond, seed, "m"): records(c) for cond, c in conditions for seed in (0, 1)}
    params = CompareParams(n_bootstrap=4000, confidence=0.95, seed=3)
    row = build_compare(preds, params)["m"]["gsm8k"]
    ids = [f"q{i}" for i in range(n)] * 2
    ref, trt = np.concatenate([base, base]), np.concatenate([treat, treat])
    clustered = paired_bootstrap_ci(ref, trt, n_bootstrap=4000, seed=3, clusters=ids)
    naive = paired_bootstrap_ci(ref, trt, n_bootstrap=4000, seed=3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(clustered)
    assert clustered[1] - clustered[0] > 1.2 * (naive[1] - naive[0])


def test_interval_level_is_the_one_asked_for():
    rng = np.random.default_rng(5)
    ref = rng.random(400) < 0.45
    trt = np.where(rng.random(400) < 0.8, ref, rng.random(400) < 0.6)
    wide = paired_bootstrap_ci(ref, trt, n_bootstrap=20_000, confidence=0.95, seed=1)
    narrow = paired_bootstrap_ci(ref, trt, n_bootstrap=20_000, confidence=0.90, seed=1)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    d = trt.astype(float) - ref.astype(float)
    se = d.std(ddof=1) / np.sqrt(d.size)
    # percentile intervals of a mean of 400 pairs: within 0.2 SE of the normal one
    assert wide[1] - d.mean() == pytest.approx(1.96 * se, abs=0.2 * se)
    assert narrow[1] - d.mean() == pytest.approx(1.645 * se, abs=0.2 * se)
