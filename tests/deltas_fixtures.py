"""Tiny Hugging Face checkpoints built offline from configs (random init) for the delta tests."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file


def tiny_config(arch: str, vocab: int = 96):
    from transformers import GemmaConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
        )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "mistral":
        return MistralConfig(**common)
    if arch == "gemma":
        return GemmaConfig(**common | {"num_key_value_heads": 1, "head_dim": 8})
    raise ValueError(arch)


def build(arch: str, seed: int = 0, vocab: int = 96) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, vocab))
    with torch.no_grad():  # norms start at exactly 1 or 0: make them random too
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def finetune(model: torch.nn.Module, seed: int, scale: float = 1e-2, density: float = 1.0):
    """A copy with a random update of relative size `scale` on a `density` share of entries."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            noise = torch.randn(p.shape, generator=gen) * scale * (p.detach().std() + 1e-3)
            if density < 1.0:
                noise *= torch.rand(p.shape, generator=gen) < density
            p.add_(noise)
    return out


def save(model: torch.nn.Module, path: Path, dtype=None, shard: str | None = None) -> Path:
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kwargs)
    # A checkpoint comes with its tokenizer (a merge refuses a base without one); its config
    # stands in for the vocabulary files, which nothing here reads.
    (path / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    return path


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (the naive, full-memory reference)."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def make_pair(
    tmp: Path, arch: str = "llama", dtype=None, shard: str | None = None, **ft_kwargs
) -> tuple[Path, Path]:
    base = build(arch)
    ft = finetune(base, seed=1, **ft_kwargs)
    return save(base, tmp / f"{arch}_base", dtype, shard), save(
        ft, tmp / f"{arch}_ft", dtype, shard
    )


# Hand-made checkpoints for the SFT-vs-RLVR contrast: every value is dyadic, so each delta is
# exact in fp32 and every number of the report can be computed by hand (tests/test_deltas_report).
UP = "model.layers.0.mlp.up_proj.weight"  # W = 1
Q = "model.layers.1.self_attn.q_proj.weight"  # W = 2


def contrast_tensors() -> dict[str, dict[str, torch.Tensor]]:
    """base, sft = base + τ_sft, rl = base + τ_rl (4×4 tensors).

    τ_sft: up row 0 = 1/2, rows 1–3 = 1/8; q = 1/4 everywhere (dense, rank 1).
    τ_rl:  up row 0 = 2⁻⁶·[+ + − −], row 1 = 2⁻⁷·[+ − + −], row 2 = 2⁻¹⁰·[+ − + −] (below half
           a bf16 step of W = 1), row 3 = 0; q = 2⁻⁹ everywhere (below half a step of W = 2).
    """
    base = {UP: torch.ones(4, 4), Q: torch.full((4, 4), 2.0)}
    sft = {UP: torch.tensor([[0.5] * 4] + [[0.125] * 4] * 3), Q: torch.full((4, 4), 0.25)}
    pm, alt = [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, 1.0, -1.0]
    rl_up = torch.tensor([pm, alt, alt, [0.0] * 4]) * torch.tensor(
        [[2**-6], [2**-7], [2**-10], [0]]
    )
    rl = {UP: rl_up, Q: torch.full((4, 4), 2.0**-9)}
    return {
        "base": base,
        "sft": {k: base[k] + sft[k] for k in base},
        "rl": {k: base[k] + rl[k] for k in base},
    }


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """A checkpoint directory holding only `model.safetensors` (fp32)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors")
    return path
