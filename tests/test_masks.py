"""Masks: exact selection (per tensor, global), packed files, Jaccard against brute force, the
Fisher diagonal against per-example gradients, export, and bad files."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from deltalab.errors import CheckpointError, ConfigError
from deltalab.masks.build import (
    MaskFile,
    eligible,
    export_pt,
    random_scores,
    select,
    write_mask,
)
from deltalab.masks.compare import jaccard, jaccard_table, random_jaccard
from deltalab.masks.fisher import dpo_fisher
from tests.evaluation_fixtures import build_model, build_tokenizer


def _scores(tensors: dict[str, torch.Tensor]):
    return {n: (tuple(t.shape), lambda t=t: t.reshape(-1).abs()) for n, t in tensors.items()}


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "h.0.attn.c_attn.weight": torch.randn(16, 48, generator=g),
        "h.0.mlp.c_fc.weight": torch.randn(16, 64, generator=g) * 3,  # larger: wins globally
        "h.1.mlp.c_proj.bias": torch.randn(16, generator=g),
    }


def test_per_tensor_selection_keeps_exactly_k_of_the_largest():
    tensors = _tensors()
    for name, mask in select(_scores(tensors), 0.1, "tensor"):
        x = tensors[name].reshape(-1).abs()
        k = round(0.1 * x.numel())
        assert int(mask.sum()) == k
        assert x[mask].min() >= x[~mask].max()


def test_global_selection_keeps_exactly_k_overall_and_follows_magnitude():
    tensors = _tensors()
    masks = dict(select(_scores(tensors), 0.1, "global"))
    total = sum(t.numel() for t in tensors.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
    kept = torch.cat([tensors[n].reshape(-1).abs()[m] for n, m in masks.items()])
    dropped = torch.cat([tensors[n].reshape(-1).abs()[~m] for n, m in masks.items()])
    assert kept.min() >= dropped.max()
    share = {n: float(m.float().mean()) for n, m in masks.items()}
    assert share["h.0.mlp.c_fc.weight"] > share["h.0.attn.c_attn.weight"]  # not per tensor


def test_ties_are_exact_and_deterministic():
    flat = {"w": torch.ones(100)}
    masks = dict(select(_scores(flat), 0.05, "global"))
    assert torch.equal(masks["w"], torch.arange(100) < 5)  # lowest flat indices first


def test_bad_density_and_selection():
    with pytest.raises(ConfigError, match="density"):
        list(select(_scores(_tensors()), 0.0, "tensor"))
    with pytest.raises(ConfigError, match="selection"):
        list(select(_scores(_tensors()), 0.1, "layer"))


def test_eligible_leaves_out_modules():
    names = [
        "transformer.wte.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.mlp.c_fc.weight",
    ]
    assert eligible(names, ["embedding", "norm"]) == ["transformer.h.0.mlp.c_fc.weight"]


def test_random_scores_depend_on_name_and_seed_only():
    a = random_scores((4, 5), "x", 0)
    assert torch.equal(a, random_scores((4, 5), "x", 0))
    assert not torch.equal(a, random_scores((4, 5), "y", 0))
    assert not torch.equal(a, random_scores((4, 5), "x", 1))


def _write(path, masks: dict[str, torch.Tensor], method="magnitude"):
    shapes = {n: tuple(m.shape) for n, m in masks.items()}
    write_mask(path, ((n, m.reshape(-1)) for n, m in masks.items()), shapes, {"method": method})
    return MaskFile(path)


def test_mask_files_round_trip_packed_and_export(tmp_path):
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(37, 11, generator=g) < 0.2, "b": torch.rand(5, generator=g) < 0.5}
    f = _write(tmp_path / "m.safetensors", masks)
    for name, m in masks.items():
        assert torch.equal(f.mask(name), m)
    assert f.packed("a").nbytes == (37 * 11 + 7) // 8  # bits, not bools
    assert f.density == pytest.approx(sum(int(m.sum()) for m in masks.values()) / (37 * 11 + 5))
    export_pt(f, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(loaded) == {"a", "b"} and torch.equal(loaded["a"], masks["a"])
    assert loaded["a"].dtype == torch.bool
    with pytest.raises(CheckpointError, match="shape"):
        f.check_model({"a": (37, 12), "b": (5,)}, "the model")
    with pytest.raises(CheckpointError, match="not in"):
        f.check_model({"a": (37, 11)}, "the model")


def test_bad_mask_files_fail_with_the_file_name(tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "m.safetensors"
    _write(f, {"a": torch.rand(64, 64) < 0.1})
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        MaskFile(truncated).mask("a")
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a deltalab mask"):
        MaskFile(other)
    with pytest.raises(CheckpointError, match="no such"):
        MaskFile(tmp_path / "missing.safetensors")


def test_jaccard_matches_brute_force_on_dense_bools(tmp_path):
    g = torch.Generator().manual_seed(1)
    a = {"x": torch.rand(33, 17, generator=g) < 0.3, "y": torch.rand(100, generator=g) < 0.05}
    b = {"x": torch.rand(33, 17, generator=g) < 0.1, "y": a["y"].clone()}
    fa, fb = _write(tmp_path / "a.safetensors", a), _write(tmp_path / "b.safetensors", b)
    got = jaccard(fb, fa)
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    assert got["jaccard"] == pytest.approx(inter / union)
    assert got["a_in_b"] == pytest.approx(inter / sum(int(b[n].sum()) for n in b))
    per = [int((a[n] & b[n]).sum()) / int((a[n] | b[n]).sum()) for n in a]
    assert got["per_tensor_mean"] == pytest.approx(np.mean(per))
    assert got["per_tensor_max"] == pytest.approx(1.0)  # y is identical
    rho_a = sum(int(m.sum()) for m in a.values()) / (33 * 17 + 100)
    rho_b = sum(int(m.sum()) for m in b.values()) / (33 * 17 + 100)
    assert got["random"] == pytest.approx(random_jaccard(rho_b, rho_a))
    table = jaccard_table({"magnitude": fa, "momentum": fb}, "magnitude")
    assert list(table) == ["momentum_vs_magnitude"]


def test_random_expectation_formula_and_random_masks_meet_it(tmp_path):
    assert random_jaccard(0.025, 0.025) == pytest.approx(0.0127, abs=1e-4)
    assert random_jaccard(0.3, 0.3) == pytest.approx(0.3 / 1.7)
    n = 200_000
    a = {"w": random_scores((n,), "w", 0) < 0.1}
    b = {"w": random_scores((n,), "w", 1) < 0.1}
    got = jaccard(_write(tmp_path / "a.safetensors", a), _write(tmp_path / "b.safetensors", b))
    assert got["jaccard"] == pytest.approx(got["random"], rel=0.05)


def test_fisher_is_the_sum_of_per_pair_squared_gradients():
    tokenizer = build_tokenizer()
    reference = build_model(tokenizer, seed=0, init=0.05)
    model = copy.deepcopy(reference)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    pairs = [
        {"prompt": "What is 2 times 3?", "chosen": "2*3=6. #### 6", "rejected": "2*3=5. #### 5"},
        {"prompt": "Tom has 4 apples.", "chosen": "The answer is 4.", "rejected": "It is 9."},
        {"prompt": "Add 7 and 8.", "chosen": "7+8=15 #### 15", "rejected": "7+8=16 #### 16"},
    ]
    name = "transformer.h.0.mlp.c_fc.weight"
    fisher = dpo_fisher(model, reference, tokenizer, pairs, 0.1, [name], progress=False)
    # reference computation: torch.func, one pair at a time
    from torch.func import functional_call, grad

    params = {k: v.detach() for k, v in model.named_parameters()}
    from deltalab.masks.fisher import _encode

    def logprob(p, ids, start):  # written out here, not shared with the code under test
        out = functional_call(model, p, (), {"input_ids": ids}) if p else reference(ids)
        logp = torch.log_softmax(out.logits[0, start - 1 : -1].float(), -1)
        return logp.gather(-1, ids[0, start:, None]).sum()

    def loss(p, pair):
        w = _encode(tokenizer, pair["prompt"], pair["chosen"])
        l_ = _encode(tokenizer, pair["prompt"], pair["rejected"])
        with torch.no_grad():
            ref = logprob(None, *w) - logprob(None, *l_)
        return -torch.nn.functional.logsigmoid(0.1 * (logprob(p, *w) - logprob(p, *l_) - ref))

    expected = sum(grad(loss)(params, pair)[name] ** 2 for pair in pairs)
    torch.testing.assert_close(fisher[name], expected, rtol=1e-4, atol=1e-12)
    batch = sum(grad(loss)(params, pair)[name] for pair in pairs) ** 2
    assert not torch.allclose(fisher[name], batch, rtol=1e-2)  # not a squared batch gradient


def test_cli_builds_masks_of_any_checkpoints_and_exports_them(tmp_path, capsys):
    from safetensors.torch import save_file

    from deltalab.cli import main
    from tests.deltas_fixtures import build, finetune, save

    model = build("llama", seed=0)
    tuned = finetune(model, seed=1)
    save(model, tmp_path / "base")
    save(tuned, tmp_path / "dpo")
    moments = {n: torch.randn(p.shape) for n, p in tuned.named_parameters()}
    save_file(moments, tmp_path / "exp_avg.safetensors")
    args = ["masks", "--base", str(tmp_path / "base"), "--finetuned", str(tmp_path / "dpo")]
    args += ["--moments", str(tmp_path / "exp_avg.safetensors"), "--density", "0.1"]
    assert main([*args, "--out", str(tmp_path / "masks")]) == 0
    assert "momentum_vs_magnitude" in capsys.readouterr().out
    names = {"magnitude", "momentum", "random"}
    assert {p.stem for p in (tmp_path / "masks").glob("*.safetensors")} == names
    mag = MaskFile(tmp_path / "masks/magnitude.safetensors")
    assert not any("embed" in n or "norm" in n for n in mag.entries)  # excluded by default
    assert mag.density == pytest.approx(0.1, abs=0.01)
    assert main(["masks", "export", str(tmp_path / "masks/magnitude.safetensors")]) == 0
    exported = torch.load(tmp_path / "masks/magnitude.pt", weights_only=True)
    assert set(exported) == set(mag.entries)

    moments["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3)  # moments of another model
    save_file(moments, tmp_path / "exp_avg.safetensors")
    assert main([*args, "--out", str(tmp_path / "bad")]) == 2
    assert "up_proj" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as bad_density:
        main([*args[:-2], "--density", "1.5", "--out", str(tmp_path / "x")])
    assert bad_density.value.code == 2 and "--density" in capsys.readouterr().err


def test_fisher_cuts_pairs_to_the_context_and_refuses_prompts_that_fill_it():
    from deltalab.errors import DataError

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0, n_positions=24, init=0.05)
    long = {"prompt": "What is 2 times 3?", "chosen": "2*3=6. " * 20, "rejected": "2*3=5. " * 20}
    name = "transformer.h.0.mlp.c_fc.weight"
    fisher = dpo_fisher(model, model, tokenizer, [long], 0.1, [name], progress=False)
    assert torch.isfinite(fisher[name]).all() and fisher[name].sum() >= 0
    with pytest.raises(DataError, match="longer than 4 tokens"):
        dpo_fisher(model, model, tokenizer, [long], 0.1, [name], max_length=4, progress=False)


def _moved(deltas: dict[str, torch.Tensor]):
    return {n: (lambda d=d: d.reshape(-1) != 0) for n, d in deltas.items()}


@pytest.mark.parametrize("selection", ["tensor", "global"])
def test_masks_never_select_an_entry_whose_delta_is_exactly_zero(tmp_path, selection):
    """Two runs that change disjoint modules: their magnitude masks used to fill the density with
    unchanged entries in index order (Jaccard 0.46 against 0.18 at random); now they share
    nothing, each keeps only what moved, and reports the density it reached."""
    g = torch.Generator().manual_seed(3)
    shapes = {"h.0.attn.c_attn.weight": (32, 32), "h.0.mlp.c_fc.weight": (32, 32)}
    names = list(shapes)
    run_a = {n: torch.zeros(s) for n, s in shapes.items()}
    run_b = {n: torch.zeros(s) for n, s in shapes.items()}
    run_a[names[0]] = torch.randn(32, 32, generator=g)  # moves attention only
    run_b[names[1]] = torch.randn(32, 32, generator=g)  # moves the MLP only
    run_a[names[1]][0, :10] = 1.0  # and 10 MLP entries: fewer than the density asks there
    run_b[names[1]][0, :10] = 0.0  # which run b leaves alone: the runs touch disjoint entries
    files = {}
    for label, deltas in (("a", run_a), ("b", run_b)):
        masks = dict(select(_scores(deltas), 0.25, selection, _moved(deltas)))
        for name, mask in masks.items():
            assert not (mask & (deltas[name].reshape(-1) == 0)).any()
        moved = {n: int((d != 0).sum()) for n, d in deltas.items()}
        files[label] = MaskFile(
            write_mask(tmp_path / f"{label}.safetensors", masks.items(), shapes, {"method": "m"},
                       moved) and tmp_path / f"{label}.safetensors"
        )  # fmt: skip
    got = jaccard(files["a"], files["b"])
    assert got["jaccard"] == 0.0
    if selection == "tensor":
        assert files["a"].entries[names[1]] == {"shape": [32, 32], "kept": 10, "movable": 10}
        assert files["a"].density == pytest.approx((256 + 10) / 2048)  # what it reached
    # with every entry moved, the restriction changes nothing (bit for bit)
    dense = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    plain = dict(select(_scores(dense), 0.25, selection))
    restricted = dict(select(_scores(dense), 0.25, selection, _moved(dense)))
    assert all(torch.equal(plain[n], restricted[n]) for n in names)
