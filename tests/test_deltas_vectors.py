"""Sparse task vectors and merging: exact numbers against naive full-state-dict references."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from deltalab.cli import main
from deltalab.errors import CheckpointError, ConfigError
from deltalab.merging.disk import merge
from deltalab.merging.vectors import TaskVector, build_task_vector, build_task_vectors
from deltalab.tensors.reader import Checkpoint
from deltalab.tensors.topk import topk_count, topk_mask_reference
from tests.deltas_fixtures import build, finetune, save, state_dict


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Llama in bf16 (sharded) with an SFT-like dense and an RL-like sparse finetune; GPT-2."""
    tmp = tmp_path_factory.mktemp("vec")
    base = build("llama")
    out = {
        "base": save(base, tmp / "base", torch.bfloat16, shard="20KB"),
        "sft": save(finetune(base, 1, 5e-2), tmp / "sft", torch.bfloat16, shard="20KB"),
        "rl": save(finetune(base, 2, 2e-2, 0.2), tmp / "rl", torch.bfloat16, shard="20KB"),
        "other": save(build("llama", seed=7), tmp / "other", torch.bfloat16),
        "gpt2": save(build("gpt2"), tmp / "gpt2"),
        "gpt2_ft": save(finetune(build("gpt2"), 3), tmp / "gpt2_ft"),
    }
    return out


def naive_vector(base: Path, ft: Path, ratio: float) -> dict[str, torch.Tensor]:
    """DoTS-style reference, but exact-k: full state dicts, dense fp32 τ, sorted top-k."""
    b, f = state_dict(base), state_dict(ft)
    out = {}
    for name, w in b.items():
        tau = f[name].float() - w.float()
        if ratio < 1.0:
            tau = tau * topk_mask_reference(tau, topk_count(tau.numel(), ratio))
        out[name] = tau
    return out


def test_sparse_vector_keeps_exactly_k_with_metadata(models, tmp_path):
    path = tmp_path / "sft.safetensors"
    meta = build_task_vector(
        Checkpoint(models["base"]), Checkpoint(models["sft"]), path, 0.3, progress=False
    )
    assert meta["format"] == "deltalab.task_vector" and meta["top_ratio"] == "0.3"
    assert len(meta["base_sha256"]) == 64 and meta["base_sha256"] != meta["finetuned_sha256"]
    vector = TaskVector(path)
    ref = naive_vector(models["base"], models["sft"], 0.3)
    assert set(vector.entries) == set(ref)
    for name, tau in ref.items():
        entry = vector.entries[name]
        assert entry["k"] == topk_count(tau.numel(), 0.3) and entry["dtype"] == "BF16"
        assert torch.equal(vector.dense(name), tau), name
    with safe_open(path, "pt") as f:  # packed bits: n/8 bytes per tensor
        name = "model.layers.0.mlp.up_proj.weight"
        assert f.get_slice(f"{name}:mask").get_shape() == [64 * 32 // 8]
        assert f.get_slice(f"{name}:values").get_shape() == [topk_count(64 * 32, 0.3)]


def test_chunked_streaming_writes_the_same_bytes(models, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    base, rl = Checkpoint(models["base"]), Checkpoint(models["rl"])
    build_task_vector(base, rl, a, 0.1, progress=False)
    build_task_vector(base, rl, b, 0.1, chunk_elements=512, progress=False)
    va, vb = TaskVector(a), TaskVector(b)
    for name, entry in va.entries.items():
        other = vb.entries[name]
        assert {k: v for k, v in entry.items() if "norm" not in k} == {
            k: v for k, v in other.items() if "norm" not in k
        }
        assert entry["norm"] == pytest.approx(other["norm"], rel=1e-6)
    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        for key in fa.keys():  # noqa: SIM118 - safe_open has no __iter__
            assert torch.equal(fa.get_tensor(key), fb.get_tensor(key)), key


def test_ratio_one_scale_one_reproduces_the_finetuned_model(models, tmp_path):
    vec = tmp_path / "dense.safetensors"
    assert (
        main(
            [
                "task-vector",
                "--base",
                str(models["base"]),
                "--finetuned",
                str(models["sft"]),
                "--out",
                str(vec),
                "--quiet",
            ]
        )
        == 0
    )
    assert all(e["dense"] for e in TaskVector(vec).entries.values())
    assert (
        main(
            [
                "merge",
                "--base",
                str(models["base"]),
                "--vector",
                f"{vec}:1",
                "--out",
                str(tmp_path / "m"),
                "--quiet",
            ]
        )
        == 0
    )
    merged, ft = state_dict(tmp_path / "m"), state_dict(models["sft"])
    for name, w in ft.items():
        assert merged[name].dtype == torch.bfloat16
        assert torch.equal(merged[name], w), name  # bf16 - bf16 is exact in fp32


def test_ratio_one_on_fp32_is_exact_to_rounding(models, tmp_path):
    vec = tmp_path / "g.safetensors"
    base, ft = Checkpoint(models["gpt2"]), Checkpoint(models["gpt2_ft"])
    build_task_vector(base, ft, vec, 1.0, progress=False)
    merge(base, [(TaskVector(vec), 1.0)], tmp_path / "m", progress=False)
    merged, ref = state_dict(tmp_path / "m"), state_dict(models["gpt2_ft"])
    assert set(merged) == set(ref)  # tied lm_head stays tied
    for name, w in ref.items():
        torch.testing.assert_close(merged[name], w, rtol=2**-23, atol=1e-9)


def test_merge_equals_naive_reference(models, tmp_path):
    paths = {k: tmp_path / f"{k}.safetensors" for k in ("sft", "rl")}
    for k, p in paths.items():
        build_task_vector(Checkpoint(models["base"]), Checkpoint(models[k]), p, 0.3, progress=False)
    out = tmp_path / "merged"
    assert (
        main(
            [
                "merge",
                "--base",
                str(models["base"]),
                "--vector",
                f"{paths['sft']}:1.2",
                "--vector",
                f"{paths['rl']}:0.8",
                "--out",
                str(out),
                "--max-shard-size",
                "30KB",
                "--quiet",
            ]
        )
        == 0
    )
    base = state_dict(models["base"])
    tau_sft = naive_vector(models["base"], models["sft"], 0.3)
    tau_rl = naive_vector(models["base"], models["rl"], 0.3)
    merged = state_dict(out)
    for name, w in base.items():
        expected = (w.float() + tau_sft[name] * 1.2 + tau_rl[name] * 0.8).to(w.dtype)
        assert torch.equal(merged[name], expected), name
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert (out / "tokenizer_config.json").read_text() == '{"model_max_length": 64}'
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.state_dict()["model.norm.weight"], merged["model.norm.weight"])


@pytest.mark.parametrize("mode", ["tensor", "global"])
def test_norm_preserving_rescale(models, tmp_path, mode):
    path = tmp_path / "v.safetensors"
    build_task_vector(
        Checkpoint(models["base"]),
        Checkpoint(models["sft"]),
        path,
        0.2,
        rescale=mode,
        progress=False,
    )
    vector = TaskVector(path)
    full = naive_vector(models["base"], models["sft"], 1.0)
    norms = {n: float(vector.dense(n).double().norm()) for n in full}
    if mode == "tensor":
        for name, tau in full.items():
            assert norms[name] == pytest.approx(float(tau.double().norm()), rel=1e-5)
    total = math.sqrt(sum(v**2 for v in norms.values()))
    expected = math.sqrt(sum(float(t.double().norm()) ** 2 for t in full.values()))
    assert total == pytest.approx(expected, rel=1e-5)


def test_vector_applied_to_wrong_base_fails_and_writes_nothing(models, tmp_path):
    vec = tmp_path / "v.safetensors"
    build_task_vector(
        Checkpoint(models["base"]), Checkpoint(models["sft"]), vec, 0.3, progress=False
    )
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"v.safetensors: tensor '.*' was computed from a"):
        merge(Checkpoint(models["other"]), [(TaskVector(vec), 1.0)], out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == [vec]
    code = main(["merge", "--base", str(models["gpt2"]), "--vector", str(vec), "--out", str(out)])
    assert code == 2 and not out.exists()  # names/shapes checked before anything is written


def test_nan_in_finetuned_names_file_and_tensor(models, tmp_path):
    sd = state_dict(models["gpt2_ft"])
    sd["transformer.h.1.mlp.c_fc.weight"][3, 4] = float("nan")
    bad = tmp_path / "bad"
    bad.mkdir()
    from safetensors.torch import save_file

    save_file(sd, bad / "model.safetensors")
    (bad / "config.json").write_text((models["gpt2"] / "config.json").read_text())
    out = tmp_path / "v.safetensors"
    with pytest.raises(
        CheckpointError,
        match=r"bad/model.safetensors: tensor 'transformer.h.1.mlp.c_fc.weight' holds NaN or Inf",
    ):
        build_task_vector(Checkpoint(models["gpt2"]), Checkpoint(bad), out, 0.5, progress=False)
    assert not out.exists()
    for ratio in ("1.0", "0.5"):
        assert (
            main(
                [
                    "task-vector",
                    "--base",
                    str(models["gpt2"]),
                    "--finetuned",
                    str(bad),
                    "--top-ratio",
                    ratio,
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 2
        )
    assert list(tmp_path.iterdir()) == [bad]


def test_bad_inputs(models, tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        build_task_vector(Checkpoint(models["base"]), Checkpoint(models["sft"]), out, 1.5)
    with pytest.raises(SystemExit) as exc:  # argparse: exit code 2 with a message
        main(["task-vector", "--base", "a", "--finetuned", "b", "--top-ratio", "0", "--out", "x"])
    assert exc.value.code == 2 and "must be in (0, 1]" in capsys.readouterr().err
    # mismatched architectures
    code = main(
        [
            "task-vector",
            "--base",
            str(models["base"]),
            "--finetuned",
            str(models["gpt2"]),
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "mismatched architectures" in capsys.readouterr().err
    # a truncated vector file
    build_task_vector(
        Checkpoint(models["base"]), Checkpoint(models["rl"]), out, 0.3, progress=False
    )
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"v.safetensors: tensor .* \(truncated file\?\)"):
        TaskVector(out)
    with pytest.raises(CheckpointError, match="not a deltalab task vector"):
        TaskVector(next(models["base"].glob("*.safetensors")))
    assert not list(tmp_path.glob(".*tmp*"))


def test_several_vectors_in_one_pass_equal_separate_builds(models, tmp_path):
    base = Checkpoint(models["base"])
    one = [tmp_path / "sft1.safetensors", tmp_path / "rl1.safetensors"]
    for name, path in zip(("sft", "rl"), one, strict=True):
        build_task_vector(base, Checkpoint(models[name]), path, 0.3, progress=False)
    two = [tmp_path / "sft2.safetensors", tmp_path / "rl2.safetensors"]
    assert (
        main(
            [
                "task-vector",
                "--base",
                str(models["base"]),
                "--top-ratio",
                "0.3",
                "--quiet",
                "--finetuned",
                str(models["sft"]),
                "--out",
                str(two[0]),
                "--finetuned",
                str(models["rl"]),
                "--out",
                str(two[1]),
            ]
        )
        == 0
    )
    for a, b in zip(one, two, strict=True):
        assert a.read_bytes() == b.read_bytes()
    metas = build_task_vectors(
        base, [(Checkpoint(models["sft"]), tmp_path / "x.safetensors")], 0.3, progress=False
    )
    assert metas[0]["finetuned"] == str(models["sft"])
    code = main(
        [
            "task-vector",
            "--base",
            str(models["base"]),
            "--finetuned",
            str(models["sft"]),
            "--finetuned",
            str(models["rl"]),
            "--out",
            str(tmp_path / "y.safetensors"),
        ]
    )
    assert code == 2 and not (tmp_path / "y.safetensors").exists()


def test_merge_refuses_a_base_it_could_not_make_loadable(models, tmp_path):
    vec = tmp_path / "v.safetensors"
    build_task_vector(Checkpoint(models["gpt2"]), Checkpoint(models["gpt2_ft"]), vec, 0.3,
                      progress=False)  # fmt: skip
    for missing, match in (
        ("config.json", "no config.json"),
        ("tokenizer_config.json", "no tokenizer"),
    ):
        base = tmp_path / f"without_{missing}"
        base.mkdir()
        for f in models["gpt2"].iterdir():
            if f.name != missing:
                (base / f.name).write_bytes(f.read_bytes())
        out = tmp_path / "out"
        with pytest.raises(CheckpointError, match=match):
            merge(Checkpoint(base), [(TaskVector(vec), 1.0)], out, progress=False)
        code = main(["merge", "--base", str(base), "--vector", str(vec), "--out", str(out)])
        assert code == 2 and not out.exists()


def test_merge_records_the_rows_a_grown_vocabulary_cannot_carry(tmp_path, capsys):
    """Tulu 3 SFT has 128264 rows over the base's 128256: τ covers the shared rows, and the merge
    says which rows of the fine-tune it could not carry."""
    base = save(build("gpt2"), tmp_path / "base")
    grown = save(finetune(build("gpt2", vocab=100), 3), tmp_path / "grown")
    vec = tmp_path / "v.safetensors"
    build_task_vector(Checkpoint(base), Checkpoint(grown), vec, 1.0, progress=False)
    assert TaskVector(vec).dropped_rows() == {"transformer.wte.weight": 4}
    info = merge(Checkpoint(base), [(TaskVector(vec), 1.0)], tmp_path / "m", progress=False)
    assert info["dropped_rows"] == {str(vec): {"transformer.wte.weight": 4}}
    assert json.loads((tmp_path / "m" / "deltalab_merge.json").read_text())["dropped_rows"]
    assert "rows the base lacks" in capsys.readouterr().err
    plain = tmp_path / "p.safetensors"
    same = save(finetune(build("gpt2"), 3), tmp_path / "same")
    build_task_vector(Checkpoint(base), Checkpoint(same), plain, 1.0, progress=False)
    info = merge(Checkpoint(base), [(TaskVector(plain), 1.0)], tmp_path / "n", progress=False)
    assert "dropped_rows" not in info


def test_a_triple_of_two_architectures_is_refused_and_a_changed_rope_is_reported(
    models, tmp_path, capsys
):
    out = tmp_path / "v.safetensors"
    with pytest.raises(CheckpointError, match=r"model_type is 'gpt2' but the base .* 'llama'"):
        build_task_vectors(Checkpoint(models["base"]), [(Checkpoint(models["gpt2"]), out)], 0.3,
                           progress=False)  # fmt: skip
    assert not out.exists()
    # an SFT release that changed rope_theta (as some Qwen2.5-Math ones do): built, and said
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in models["sft"].iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    config = json.loads((moved / "config.json").read_text())
    config["rope_theta"] = 2 * config.get("rope_theta", 10000.0)
    (moved / "config.json").write_text(json.dumps(config))
    build_task_vectors(Checkpoint(models["base"]), [(Checkpoint(moved), out)], 0.3, progress=False)
    assert "rope_theta" in capsys.readouterr().err and out.is_file()
