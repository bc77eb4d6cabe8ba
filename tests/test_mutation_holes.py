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
