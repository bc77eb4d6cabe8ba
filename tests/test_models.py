"""Checkpoints: what we save is what AutoModelForCausalLM loads (the original export was not)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deltalab.atomic import atomic_dir, atomic_file
from deltalab.errors import CheckpointError
from deltalab.models import build_gpt2, load_causal_lm, save_checkpoint
from deltalab.schema.model import ModelParams

from .helpers import tiny_tokenizer


def test_saved_checkpoint_reloads_with_identical_logits(tmp_path):
    tok = tiny_tokenizer()
    model = build_gpt2(ModelParams(n_layer=2, n_head=2, n_embd=32, n_positions=64), tok, seed=0)
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.vocab_size == len(tok)
    save_checkpoint(model, tok, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = AutoTokenizer.from_pretrained(tmp_path)("What is 6 times 9?", return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, reloaded(**ids).logits)


def test_same_seed_same_weights():
    tok = tiny_tokenizer()
    params = ModelParams(n_layer=1, n_head=2, n_embd=32, n_positions=64)
    a, b = build_gpt2(params, tok, seed=3), build_gpt2(params, tok, seed=3)
    c = build_gpt2(params, tok, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_causal_lm(tmp_path / "models" / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: not a Hugging Face checkpoint"):
        load_causal_lm(tmp_path / "empty")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "ckpt"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed mid-write")
    assert (out / "a").read_text() == "1"  # the previous complete output survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "m.json") as f:
        f.write_text("{")
        raise RuntimeError
    assert not (tmp_path / "m.json").exists()


def _saved(tmp_path, name="ckpt", vocab_delta=0):
    tok = tiny_tokenizer()
    model = build_gpt2(ModelParams(n_layer=1, n_head=2, n_embd=32, n_positions=64), tok, seed=0)
    if vocab_delta:
        model.resize_token_embeddings(len(tok) + vocab_delta)
    save_checkpoint(model, tok, tmp_path / name)
    return tmp_path / name


def test_local_only_unless_hub_is_allowed(tmp_path, monkeypatch):
    # a relative path that happens to look like `org/name` is a missing directory, not a download
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="runs/typo: checkpoint directory not found"):
        load_causal_lm("runs/typo")
    with pytest.raises(CheckpointError, match="neither a checkpoint directory nor a hub id"):
        load_causal_lm("/no/such/dir", hub=True)


def test_home_relative_paths_expand(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _saved(tmp_path)
    model, tok = load_causal_lm("~/ckpt")
    assert not model.training and len(tok) == model.get_input_embeddings().num_embeddings


def test_tokenizer_must_fit_the_embedding(tmp_path):
    with pytest.raises(CheckpointError, match=r"small: the tokenizer has \d+ tokens but the model"):
        load_causal_lm(_saved(tmp_path, "small", vocab_delta=-45))


def test_bad_device_or_dtype_fails_before_loading(tmp_path):
    ckpt = _saved(tmp_path)
    with pytest.raises(CheckpointError, match="dtype 'float33' is not a torch dtype"):
        load_causal_lm(ckpt, dtype="float33")
    with pytest.raises(CheckpointError, match="device 'gpu' is not a torch device"):
        load_causal_lm(ckpt, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="no CUDA device is available"):
            load_causal_lm(ckpt, device="cuda")


_RESAVE = """
import sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from deltalab.models import save_checkpoint
src, out = Path(sys.argv[1]), Path(sys.argv[2])
save_checkpoint(AutoModelForCausalLM.from_pretrained(src), AutoTokenizer.from_pretrained(src), out)
"""


def test_saved_bytes_do_not_depend_on_hf_hub_offline(tmp_path):
    import os
    import subprocess
    import sys

    src = _saved(tmp_path, "src")
    saved = {}
    for offline in ("0", "1"):
        env = {**os.environ, "HF_HUB_OFFLINE": offline, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = tmp_path / f"offline{offline}"
        subprocess.run([sys.executable, "-c", _RESAVE, src, out], env=env, check=True)
        saved[offline] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert saved["0"] == saved["1"]
    assert "local_files_only" not in saved["1"]["tokenizer_config.json"].decode()
    assert "model.safetensors" in saved["1"]


def test_built_gpt2_uses_the_fused_kernel_of_gpt2s_own_gelu():
    from transformers import GPT2LMHeadModel

    model = build_gpt2(
        ModelParams(n_layer=1, n_head=2, n_embd=32, n_positions=64), tiny_tokenizer(), seed=0
    )
    assert model.config.activation_function == "gelu_pytorch_tanh"
    config = model.config.to_dict() | {"activation_function": "gelu_new"}  # GPT-2's default
    reference = GPT2LMHeadModel(type(model.config).from_dict(config))
    reference.load_state_dict(model.state_dict())
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.allclose(model(x).logits, reference.eval()(x).logits, atol=1e-5)


def test_runtime_dtype_is_bf16_on_cuda_only():
    from deltalab.models import runtime_dtype
    from deltalab.schema.runtime import RuntimeParams

    assert runtime_dtype(RuntimeParams(device="cpu", bf16=True)) == "float32"
    assert runtime_dtype(RuntimeParams(device="cpu", bf16=True), fallback="float16") == "float16"
    assert runtime_dtype(RuntimeParams(device="cpu", bf16=False)) == "float32"
    expected = "bfloat16" if torch.cuda.is_available() else "float32"
    assert runtime_dtype(RuntimeParams(device="auto", bf16=True)) == expected
    if torch.cuda.is_available():
        assert runtime_dtype(RuntimeParams(device="cuda", bf16=False)) == "float32"
