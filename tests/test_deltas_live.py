"""In-memory merge: bit-identical to the written merge, no drift over trials, wrong bases fail."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file

from deltalab.errors import CheckpointError
from deltalab.merging.disk import merge
from deltalab.merging.live import LiveMerge
from deltalab.merging.vectors import TaskVector, build_task_vectors
from deltalab.tensors.reader import Checkpoint
from tests.deltas_fixtures import build, finetune, save, state_dict


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    """A base, an SFT-like (large, dense) and an RL-like (small, sparse) finetune, and vectors."""
    root = tmp_path_factory.mktemp("live")
    model = build("gpt2", seed=0)
    base = save(model, root / "base")
    sft = save(finetune(model, seed=1, scale=3e-2), root / "sft")
    rl = save(finetune(model, seed=2, scale=1e-3, density=0.3), root / "rl")
    vectors = (root / "sft.safetensors", root / "rl.safetensors")
    build_task_vectors(
        Checkpoint(base),
        [(Checkpoint(sft), vectors[0]), (Checkpoint(rl), vectors[1])],
        0.3,
        rescale="tensor",
        progress=False,
    )
    return root, base, vectors


def _live(base, vectors, block=None, dtype=None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).eval()
    return model, LiveMerge(model, Checkpoint(base), [TaskVector(v) for v in vectors], block)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("block", [None, 100])  # 100: many blocks, ragged ends, empty blocks
def test_hundred_trials_leave_no_drift_and_match_the_written_merge(track, block):
    root, base, vectors = track
    model, live = _live(base, vectors, block)
    original = state_dict(base)
    rng = random.Random(0)
    for _ in range(100):
        live.apply([rng.uniform(-2, 3), rng.uniform(-2, 3)])
    live.apply([0.0, 0.0])
    now = _weights(model)
    for name, tensor in original.items():
        assert torch.equal(now[name], tensor), name  # the base, bit for bit

    for scales in ([1.0, 1.0], [0.7, 1.9], [rng.uniform(0, 2), rng.uniform(0, 2)]):
        live.apply(scales)
        out = root / f"merged-{block}-{scales[0]:.3f}-{scales[1]:.3f}"
        pairs = [(TaskVector(v), s) for v, s in zip(vectors, scales, strict=True)]
        merge(Checkpoint(base), pairs, out, progress=False)
        written = state_dict(out)
        now = _weights(model)
        for name, tensor in written.items():
            assert torch.equal(now[name], tensor), (scales, name)
        # and it did change the weights the vectors touch
        assert not torch.equal(
            now["transformer.h.0.attn.c_attn.weight"],
            original["transformer.h.0.attn.c_attn.weight"],
        )


def test_scales_move_weights_by_exactly_the_sparse_vector(track):
    _, base, vectors = track
    model, live = _live(base, vectors)
    sft = TaskVector(vectors[0])
    live.apply([2.0, 0.0])
    name = "transformer.h.1.mlp.c_fc.weight"
    expected = load_file(f"{base}/model.safetensors")[name] + 2.0 * sft.dense(name)
    torch.testing.assert_close(model.state_dict()[name], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="2 vectors"):
        live.apply([1.0])


def test_vectors_from_another_base_or_architecture_fail(track, tmp_path):
    _, base, vectors = track
    other = build("gpt2", seed=5)
    other_base = save(other, tmp_path / "other")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(other_base)
    with pytest.raises(CheckpointError, match="different base"):
        LiveMerge(model, Checkpoint(other_base), [TaskVector(vectors[0])])

    llama = build("llama", seed=0)
    llama_base = save(llama, tmp_path / "llama")
    save(finetune(llama, seed=1), tmp_path / "llama_ft")
    wrong = tmp_path / "llama.safetensors"
    build_task_vectors(
        Checkpoint(llama_base), [(Checkpoint(tmp_path / "llama_ft"), wrong)], 0.5, progress=False
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    with pytest.raises(CheckpointError, match=r"different base|different architectures"):
        LiveMerge(model, Checkpoint(base), [TaskVector(vectors[0]), TaskVector(wrong)])


def test_compare_vectors_counts_conflicts_overlap_and_norms(tmp_path):
    from deltalab.merging.compare import compare_vectors

    model = build("gpt2", seed=0)
    base = save(model, tmp_path / "base")
    a_model, b_model = finetune(model, seed=1), finetune(model, seed=1)
    with torch.no_grad():  # b = -a on every entry but the first row of one tensor: known counts
        for (name, pa), pb in zip(a_model.named_parameters(), b_model.parameters(), strict=True):
            base_p = dict(model.named_parameters())[name]
            pb.copy_(base_p - 0.5 * (pa - base_p))
    save(a_model, tmp_path / "a")
    save(b_model, tmp_path / "b")
    out = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    build_task_vectors(
        Checkpoint(base),
        [(Checkpoint(tmp_path / "a"), out[0]), (Checkpoint(tmp_path / "b"), out[1])],
        0.25,
        progress=False,
    )
    stats = compare_vectors(TaskVector(out[0]), TaskVector(out[1]))
    assert stats["sign_conflict"] == 1.0  # b points the other way everywhere
    assert stats["sign_conflict_of_all"] == pytest.approx(0.25, abs=0.01)  # of all entries
    assert stats["overlap"] == pytest.approx(1.0, abs=1e-3)  # same magnitudes order → same masks
    assert stats["norm_ratio"] == pytest.approx(2.0, rel=1e-3)
    assert stats["dense_norm_ratio"] == pytest.approx(2.0, rel=1e-3)
    assert 0.25 < stats["energy_kept_a"] < 1.0


def test_a_bf16_base_keeps_a_bf16_master_and_still_matches_the_writer(track, tmp_path):
    _, base, _ = track
    from transformers import AutoModelForCausalLM

    bf16 = tmp_path / "bf16"
    save(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), bf16)
    sparse = tmp_path / "sft.safetensors"
    build_task_vectors(Checkpoint(bf16), [(Checkpoint(track[0] / "sft"), sparse)], 0.3,
                       progress=False)  # fmt: skip
    model, live = _live(bf16, [sparse], block=64, dtype=torch.bfloat16)
    assert all(s.base.dtype == torch.bfloat16 for s in live.slots.values())  # half the memory
    live.apply([1.3])
    merge(Checkpoint(bf16), [(TaskVector(sparse), 1.3)], tmp_path / "m", progress=False)
    written = state_dict(tmp_path / "m")
    for name, tensor in written.items():
        assert torch.equal(model.state_dict()[name], tensor), name
