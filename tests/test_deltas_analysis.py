"""Delta analysis: numbers against naive full-state-dict computations, outputs, bad input."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deltalab.cli import main
from deltalab.deltas.analysis import DeltaInput, analyze
from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.deltas.sketch import ranks
from deltalab.deltas.summary import metrics, summary
from deltalab.errors import CheckpointError
from deltalab.tensors.reader import Checkpoint
from deltalab.tensors.topk import topk_count, topk_mask_reference
from tests.deltas_fixtures import build, finetune, save, state_dict
from tests.tiny import tiny_raw


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("an")
    base = build("llama")
    rl = finetune(base, 2, 1e-3, density=0.2)
    return {
        "base": save(base, tmp / "base"),
        "sft": save(finetune(base, 1, 1e-2), tmp / "sft"),
        "rl": save(rl, tmp / "rl"),
    }


def run(paths: dict[str, Path], labels=("sft", "rl"), **params):
    base = Checkpoint(paths["base"])
    deltas = [DeltaInput(k, base, Checkpoint(paths[k])) for k in labels]
    return analyze(deltas, AnalyzeDeltasParams(**params), progress=False)


def test_per_tensor_numbers_match_naive(llama):
    result = run(llama)
    b = state_dict(llama["base"])
    fts = {k: state_dict(llama[k]) for k in ("sft", "rl")}
    rows = {(r["delta"], r["tensor"]): r for r in result.tensors}
    for label, ft in fts.items():
        for name, w in b.items():
            w = w.double()
            d = ft[name].double() - w
            r = rows[label, name]
            n = d.numel()
            assert r["n_params"] == n
            assert r["norm"] == pytest.approx(float(d.norm()), rel=1e-5)
            assert r["rel_norm"] == pytest.approx(float(d.norm() / w.norm()), rel=1e-5)
            assert r["max_abs"] == pytest.approx(float(d.abs().max()), rel=1e-6)
            assert r["frac_zero"] == float((d == 0).sum()) / n
            assert r["frac_unchanged_atol"] == float((d.abs() <= 1e-5).sum()) / n
            bf16 = d.float().abs() <= w.float().abs() * 2**-9
            assert r["frac_unchanged_bf16"] == float(bf16.sum()) / n
            e2 = float((d**2).sum())
            top = topk_mask_reference(d, topk_count(n, 0.01))
            assert r["energy_top_share"] == pytest.approx(float((d[top] ** 2).sum()) / e2, 1e-5)
            kept = topk_mask_reference(d, topk_count(n, 0.3))
            assert r["energy_kept_sparse"] == pytest.approx(float((d[kept] ** 2).sum()) / e2, 1e-5)
    # RL-like: ~80% of entries unchanged, most of them exactly
    total = summary(result)["deltas"]["rl"]["total"]
    assert 0.7 < total["frac_zero"] <= total["frac_unchanged_atol"]
    assert summary(result)["deltas"]["sft"]["total"]["frac_zero"] < 0.01


def test_pairs_of_the_same_base_match_naive(llama):
    result = run(llama)
    assert list(result.pairs) == ["sft_vs_rl"]
    b = state_dict(llama["base"])
    sft, rl = state_dict(llama["sft"]), state_dict(llama["rl"])
    dot = a2 = b2 = 0.0
    for row in result.pair_tensors:
        name = row["tensor"]
        da, db = sft[name].double() - b[name].double(), rl[name].double() - b[name].double()
        assert row["cosine"] == pytest.approx(
            float((da * db).sum() / (da.norm() * db.norm())), abs=1e-6
        )
        both = (da != 0) & (db != 0)
        agree = float(((da.sign() == db.sign()) & both).sum()) / float(both.sum())
        assert row["sign_agreement"] == pytest.approx(agree, abs=1e-12)
        ma = topk_mask_reference(da, topk_count(da.numel(), 0.3))
        mb = topk_mask_reference(db, topk_count(db.numel(), 0.3))
        sa, sb = da * ma, db * mb
        assert row["cosine_sparse"] == pytest.approx(
            float((sa * sb).sum() / (sa.norm() * sb.norm())), abs=1e-6
        )
        assert row["mask_jaccard"] == pytest.approx(float((ma & mb).sum() / (ma | mb).sum()))
        assert row["magnitude_ratio"] == pytest.approx(float(da.norm() / db.norm()), rel=1e-5)
        dot, a2, b2 = (
            dot + float((da * db).sum()),
            a2 + float(da.norm() ** 2),
            b2 + float(db.norm() ** 2),
        )
    total = metrics(result)["pairs"]["sft_vs_rl"]["total"]
    assert total["cosine"] == pytest.approx(dot / math.sqrt(a2 * b2), abs=1e-6)


def test_chunked_streaming_equals_in_memory(llama):
    whole = run(llama, rank=False)
    chunked = run(llama, rank=False, chunk_elements=64)
    for r1, r2 in zip(whole.tensors, chunked.tensors, strict=True):
        assert r1.keys() == r2.keys()
        for k, v in r1.items():
            if isinstance(v, float) and not math.isnan(v):
                assert r2[k] == pytest.approx(v, rel=1e-5, abs=1e-12), (r1["tensor"], k)
            elif not isinstance(v, float):
                assert r2[k] == v
    for r1, r2 in zip(whole.pair_tensors, chunked.pair_tensors, strict=True):
        for k, v in r1.items():
            if isinstance(v, float):
                assert r2[k] == pytest.approx(v, rel=1e-5, abs=1e-9), (r1["tensor"], k)


def test_ranks_exact_and_sketched(tmp_path):
    base = build("llama")
    ft = finetune(base, 1, 0.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        up = ft.model.layers[0].mlp.up_proj.weight  # 64 x 32
        up += torch.randn(64, 1, generator=g) @ torch.randn(1, 32, generator=g) * 0.01
        down = ft.model.layers[0].mlp.down_proj.weight  # 32 x 64, full-rank update
        down += torch.randn(32, 64, generator=g) * 0.01
    paths = {"base": save(base, tmp_path / "b"), "ft": save(ft, tmp_path / "f")}
    exact = run(paths, ("ft",))
    sketch = run(paths, ("ft",), rank_exact_max_dim=1, rank_sketch_size=8, chunk_elements=512)
    rows = {(r["tensor"]): r for r in exact.tensors}
    rows_s = {(r["tensor"]): r for r in sketch.tensors}
    up_name, down_name = "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"
    assert rows[up_name]["stable_rank"] == pytest.approx(1.0, abs=1e-3)
    assert rows[up_name]["effective_rank"] < 1.05
    assert rows_s[up_name]["stable_rank"] == pytest.approx(1.0, abs=1e-3)
    assert rows_s[up_name]["effective_rank"] < 1.1
    ref = base.model.layers[0].mlp.down_proj.weight.detach()
    svals = torch.linalg.svdvals(down.detach().double() - ref.double())
    stable, effective = ranks(svals, float((svals**2).sum()), 32)
    assert rows[down_name]["stable_rank"] == pytest.approx(stable, rel=1e-4)
    assert rows[down_name]["effective_rank"] == pytest.approx(effective, rel=1e-4)
    assert effective > 20  # random updates are nearly full rank
    # the sketch sees 8 singular values and spreads the rest: within 15% here
    assert rows_s[down_name]["effective_rank"] == pytest.approx(effective, rel=0.15)


def test_resized_vocabulary_compares_shared_rows(tmp_path):
    base = build("llama")
    ft = build("llama", vocab=104)
    sd_b = base.state_dict()
    with torch.no_grad():
        for name, p in ft.state_dict().items():
            if p.shape == sd_b[name].shape:
                p.copy_(sd_b[name])
            else:
                p[:96] = sd_b[name] + 0.01
    paths = {"base": save(base, tmp_path / "b"), "big": save(ft, tmp_path / "big")}
    result = run(paths, ("big",))
    resized = summary(result)["deltas"]["big"]["resized"]
    assert set(resized) == {"model.embed_tokens.weight", "lm_head.weight"}
    emb = resized["model.embed_tokens.weight"]
    assert (emb["rows_base"], emb["rows_finetuned"], emb["shared_rows"]) == (96, 104, 96)
    expected = float(ft.model.embed_tokens.weight[96:].detach().double().norm())
    assert emb["extra_rows_norm"] == pytest.approx(expected, rel=1e-6)
    row = next(r for r in result.tensors if r["tensor"] == "model.embed_tokens.weight")
    assert row["n_params"] == 96 * 32 and row["max_abs"] == pytest.approx(0.01, rel=1e-3)


def test_gpt2_fused_qkv_and_untied_lm_head(tmp_path):
    base = build("gpt2")
    paths = {"base": save(base, tmp_path / "b")}
    sd = {k: v.clone() for k, v in state_dict(paths["base"]).items()}
    sd["lm_head.weight"] = sd["transformer.wte.weight"] + 0.5  # the finetune unties the head
    sd["transformer.h.0.attn.c_attn.weight"][:, 64:] += 1.0  # only v changes
    (tmp_path / "f").mkdir()
    save_file(sd, tmp_path / "f" / "model.safetensors")
    config = json.loads((paths["base"] / "config.json").read_text()) | {
        "tie_word_embeddings": False
    }
    (tmp_path / "f" / "config.json").write_text(json.dumps(config))
    paths["ft"] = tmp_path / "f"
    result = run(paths, ("ft",))
    rows = {r["tensor"]: r for r in result.tensors}
    name = "transformer.h.0.attn.c_attn.weight"
    assert rows[f"{name}[q]"]["norm"] == 0 and rows[f"{name}[k]"]["norm"] == 0
    assert rows[f"{name}[v]"]["norm"] == pytest.approx(32.0)  # sqrt(32 * 32 * 1.0)
    assert rows[f"{name}[v]"]["module"] == "attn_v" and rows[f"{name}[v]"]["layer"] == 0
    assert rows["lm_head.weight"]["module"] == "lm_head"
    assert rows["lm_head.weight"]["norm"] == pytest.approx(0.5 * math.sqrt(96 * 32), rel=1e-6)


def _numbers_only(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _numbers_only(v) for k, v in obj.items())
    return isinstance(obj, int | float) and math.isfinite(obj)


def test_cli_writes_all_outputs(llama, tmp_path):
    out = tmp_path / "report"
    code = main(
        [
            "analyze",
            "--base",
            str(llama["base"]),
            "--finetuned",
            str(llama["sft"]),
            "--finetuned",
            str(llama["rl"]),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    files = {p.name for p in out.iterdir()}
    assert {
        "summary.json",
        "tensors.csv",
        "layers.csv",
        "pairs.csv",
        "pair_layers.csv",
        "report.md",
        "hist_abs_delta.png",
        "heatmap_sft.png",
        "heatmap_rl.png",
        "heatmap_sft_vs_rl.png",
    } <= files
    summ = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN tokens
    assert set(summ["deltas"]) == {"sft", "rl"} and "sft_vs_rl" in summ["pairs"]
    assert set(summ["deltas"]["sft"]["modules"]) >= {"attn_q", "mlp_down", "norm", "lm_head"}
    assert set(summ["deltas"]["sft"]["layers"]) == {"none", "0", "1"}
    report = (out / "report.md").read_text()
    assert "## Deltas of the same base" in report and "![" in report
    assert (out / "tensors.csv").read_text().count("\n") == 1 + 2 * 21
    result = run(llama)
    assert _numbers_only(metrics(result))


def test_nan_delta_is_an_error_and_writes_nothing(tmp_path):
    base = build("llama")
    paths = {"base": save(base, tmp_path / "b")}
    sd = state_dict(paths["base"])
    sd["model.layers.1.self_attn.k_proj.weight"][0, 0] = float("inf")
    (tmp_path / "bad").mkdir()
    save_file(sd, tmp_path / "bad" / "model.safetensors")
    paths["bad"] = tmp_path / "bad"
    with pytest.raises(CheckpointError, match=r"bad/model.safetensors: tensor 'model.layers.1"):
        run(paths, ("bad",))
    out = tmp_path / "out"
    assert (
        main(
            [
                "analyze",
                "--base",
                str(paths["base"]),
                "--finetuned",
                str(paths["bad"]),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    assert not out.exists()


def test_stage_writes_metrics_and_report(tmp_path, monkeypatch):
    from deltalab.config import parse_params

    pretrain = build("gpt2")
    sft_tulu = finetune(pretrain, 1, 1e-2)
    sft_gsm8k = finetune(sft_tulu, 2, 1e-3, density=0.5)
    for name, model in [("pretrain", pretrain), ("sft_tulu", sft_tulu), ("sft_gsm8k", sft_gsm8k)]:
        save(model, tmp_path / "models" / "baseline" / "seed0" / name)
    spec = importlib.util.spec_from_file_location(
        "analyze_deltas_stage", Path(__file__).parents[1] / "stages" / "analyze_deltas.py"
    )
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    pairs = [["pretrain", "sft_tulu"], ["sft_tulu", "sft_gsm8k"]]
    stage.main(parse_params(tiny_raw({"study": {"deltas": pairs, "contrast": []}})), "baseline", 0)
    m = json.loads((tmp_path / "metrics" / "deltas" / "baseline-0.json").read_text())
    assert _numbers_only(m)
    assert set(m["deltas"]) == {"sft_tulu", "sft_gsm8k"} and "pairs" not in m  # no shared base
    assert "contrast" not in m and set(m["claims"]) == {"sft_unchanged"}
    assert m["deltas"]["sft_gsm8k"]["total"]["frac_zero"] > 0.4
    assert set(m["deltas"]["sft_tulu"]["modules"]) >= {"attn_q", "attn_k", "attn_v", "mlp_up"}
    assert (tmp_path / "reports" / "deltas" / "baseline-0" / "report.md").exists()


@pytest.mark.parametrize(
    ("dtype", "says"), [(torch.bfloat16, "stored in bf16"), (None, "stored in fp32")]
)
def test_report_states_the_dtype_the_checkpoints_are_stored_in(tmp_path, dtype, says):
    from deltalab.deltas.report import write_report

    model = build("llama")
    base = Checkpoint(save(model, tmp_path / "base", dtype))
    ft = Checkpoint(save(finetune(model, 1, 5e-2), tmp_path / "ft", dtype))
    result = analyze([DeltaInput("sft", base, ft)], AnalyzeDeltasParams(methods={"sft": "sft"}),
                     progress=False)  # fmt: skip
    assert set(result.dtypes.values()) == {"BF16" if dtype else "F32"}
    write_report(result, tmp_path / "r", title="t")
    text = (tmp_path / "r" / "report.md").read_text()
    other = "stored in fp32" if dtype else "stored in bf16"
    assert says in text and other not in text
