"""Masked DPO's wiring (train.masked_dpo): what trains, and the bitwise frozen-entry check."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from deltalab.masks.build import MaskFile, write_mask
from deltalab.tensors.reader import Checkpoint
from deltalab.train.masked_dpo import check_frozen, frozen_counts, masked_optimizer


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(1, 7, dtype=torch.float32).view(2, 3))
        self.norm = torch.nn.Parameter(torch.ones(3))


def _setup(tmp_path):
    model = _Tiny()
    parent = tmp_path / "parent"
    parent.mkdir()
    save_file(
        {n: p.detach().clone() for n, p in model.named_parameters()}, parent / "model.safetensors"
    )
    keep = torch.tensor([[True, False, False], [False, True, False]])
    write_mask(tmp_path / "m.safetensors", [("w", keep.reshape(-1))], {"w": (2, 3)}, {})
    return model, Checkpoint(parent), MaskFile(tmp_path / "m.safetensors"), keep


def test_frozen_counts_are_bitwise_and_count_only_entries_outside_the_mask(tmp_path):
    model, parent, mask, _ = _setup(tmp_path)
    assert frozen_counts(model, parent, mask) == {"frozen": 7, "frozen_changed": 0, "trainable": 2}
    with torch.no_grad():
        model.w[0, 0] += 1.0  # inside the mask: allowed
        model.w[0, 1] = 2.0 + 1e-8  # outside, but rounds to the same fp32 value: unchanged
    assert frozen_counts(model, parent, mask)["frozen_changed"] == 0
    with torch.no_grad():
        model.norm[2] = -model.norm[2]  # a tensor the mask leaves out entirely
        model.w[1, 2] = 5.0 if model.w[1, 2] != 5.0 else 6.0
    assert frozen_counts(model, parent, mask)["frozen_changed"] == 2
    with pytest.raises(RuntimeError, match="masked_dpo: 2 frozen entries changed"):
        check_frozen(model, parent, mask, "masked_dpo")


def test_signed_zero_counts_as_a_change(tmp_path):
    model, parent, mask, _ = _setup(tmp_path)
    with torch.no_grad():
        model.w[0, 0] = -0.0  # inside the mask: fine
    assert frozen_counts(model, parent, mask)["frozen_changed"] == 0
    parent_zero = tmp_path / "zero"
    parent_zero.mkdir()
    w = torch.arange(1, 7, dtype=torch.float32).view(2, 3)
    w[0, 2] = 0.0
    save_file({"w": w, "norm": torch.ones(3)}, parent_zero / "model.safetensors")
    with torch.no_grad():
        model.w.copy_(w)
        model.w[0, 2] = -0.0  # frozen entry: equal as numbers, different bits
    assert frozen_counts(model, Checkpoint(parent_zero), mask)["frozen_changed"] == 1


def test_masked_optimizer_freezes_unmasked_tensors_and_steps_only_masked_entries(tmp_path):
    model, parent, mask, keep = _setup(tmp_path)
    optimizer = masked_optimizer(model, mask, "parent", learning_rate=0.1, weight_decay=0.1)
    assert not model.norm.requires_grad and model.w.requires_grad
    before = model.w.detach().clone()
    (model.w.square().sum() + model.norm.sum()).backward()
    optimizer.step()
    changed = model.w.detach() != before
    assert torch.equal(changed, keep)
    assert check_frozen(model, parent, mask, "run")["frozen_changed"] == 0


def test_masked_optimizer_refuses_a_mask_of_another_architecture(tmp_path):
    model, _, _, _ = _setup(tmp_path)
    write_mask(tmp_path / "x.safetensors", [("w", torch.ones(4, dtype=bool))], {"w": (4,)}, {})
    with pytest.raises(Exception, match=r"'w' has shape \[4\] but parent has \[2, 3\]"):
        masked_optimizer(model, MaskFile(tmp_path / "x.safetensors"), "parent", 0.1, 0.0)
