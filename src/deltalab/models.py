"""Model construction and Hugging Face checkpoint I/O (safetensors only, no remote code)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from deltalab.config import ModelParams, RuntimeParams
from deltalab.errors import CheckpointError


def build_gpt2(
    params: ModelParams, tokenizer: PreTrainedTokenizerBase, seed: int
) -> GPT2LMHeadModel:
    """A GPT-2 architecture from scratch whose special ids match the locally built tokenizer."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=params.n_positions,
        n_embd=params.n_embd,
        n_layer=params.n_layer,
        n_head=params.n_head,
        resid_pdrop=params.dropout,
        embd_pdrop=params.dropout,
        attn_pdrop=params.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def configure_torch(runtime: RuntimeParams) -> None:
    if runtime.torch_threads:
        torch.set_num_threads(runtime.torch_threads)


def load_causal_lm(
    path: str | os.PathLike, *, trust_remote_code: bool = False, revision: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM + tokenizer from a local HF directory (or hub id), with clear errors."""
    p = Path(path)
    local = p.exists()
    if local and not (p / "config.json").is_file():
        raise CheckpointError(f"{p}: not a Hugging Face checkpoint (no config.json)")
    if not local and str(path).startswith((".", "/", "models")):
        raise CheckpointError(f"{p}: checkpoint directory not found")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), revision=revision, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: cannot load a causal LM: {exc}") from exc
    return model, tokenizer


def import_pretrained(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """An existing causal LM (hub id or local path) resized to the study vocabulary."""
    model, _ = load_causal_lm(source, revision=revision, trust_remote_code=trust_remote_code)
    if model.get_input_embeddings().num_embeddings > len(tokenizer):
        raise CheckpointError(
            f"{source}: embedding has {model.get_input_embeddings().num_embeddings} rows, more "
            f"than the study tokenizer's {len(tokenizer)} ids: wrong tokenizer for this model?"
        )
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.eos_token_id = model.config.bos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def save_checkpoint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save as safetensors + config + tokenizer, loadable offline by AutoModelForCausalLM."""
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
