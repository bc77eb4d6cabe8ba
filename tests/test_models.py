"""Checkpoints: what we save is what AutoModelForCausalLM loads (the original export was not)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deltalab.atomic import atomic_dir, atomic_file
from deltalab.config import ModelParams
from deltalab.errors import CheckpointError
from deltalab.models import build_gpt2, load_causal_lm, save_checkpoint

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


def test_import_pretrained_resizes_to_the_study_vocabulary(tmp_path):
    """The real-profile path: an existing checkpoint (here a local one in hub format)."""
    from deltalab.models import import_pretrained

    tok = tiny_tokenizer()
    small = build_gpt2(ModelParams(n_layer=1, n_head=2, n_embd=32, n_positions=64), tok, seed=0)
    small.resize_token_embeddings(len(tok) - 45)  # a model that predates the mul tokens
    save_checkpoint(small, tok, tmp_path / "base")
    model = import_pretrained(str(tmp_path / "base"), tok)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id
    old = small.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight[: len(tok) - 45], old)
    with pytest.raises(CheckpointError, match="more than the study tokenizer"):
        big = build_gpt2(ModelParams(n_layer=1, n_head=2, n_embd=32, n_positions=64), tok, 0)
        big.resize_token_embeddings(len(tok) + 64)
        save_checkpoint(big, tok, tmp_path / "big")
        import_pretrained(str(tmp_path / "big"), tok)
