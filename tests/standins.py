"""Offline stand-ins for the real studies' checkpoints and datasets, in the hub's own formats.

Each family keeps the real `config.json` fields (architecture class, `model_type`, vocabulary
size, tied or untied embeddings, special token ids, Gemma's sliding-window pattern) and is shrunk
in width and depth only. Weights are sharded safetensors with an index, in the real dtype. The
tokenizer has the real number of entries (byte-level pieces, then fillers) with the family's
special tokens at their real ids and its chat template. Everything is written into a Hugging
Face cache in the hub layout (`models--ORG--NAME/snapshots/<revision>/`, `refs/main`), so the
real loading code (`snapshot_download`, `from_pretrained`) runs with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from deltalab.tokens import MUL_TOKENS

TULU_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] + eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """A real checkpoint family, shrunk: config fields, tokenizer entries and special tokens."""

    config: dict
    tokenizer_entries: int
    special: dict[int, str]  # id -> token
    roles: dict[str, str]  # bos/eos/pad -> token
    template: str | None = None
    added: dict[int, str] = field(default_factory=dict)  # id -> non-special added token
    dtype: torch.dtype = torch.bfloat16


def _mul_tokens() -> dict[int, str]:
    return {50304 + i: token for i, token in enumerate(MUL_TOKENS)}  # <MUL_6_9_54> = 50342


FAMILIES = {
    # zhengpu-berkeley/domain-token-gpt2-*-10b: 50257 + 47 padding + 45 mul tokens = 50349
    "gpt2-domain": Family(
        config=dict(
            model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=50349, n_embd=16,
            n_layer=2, n_head=2, n_positions=1024, activation_function="gelu_new",
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=50256,
            eos_token_id=50256, pad_token_id=50256, tie_word_embeddings=True,
        ),
        tokenizer_entries=50304,
        special={50256: "<|endoftext|>"} | {50257 + i: f"<|padding_{i}|>" for i in range(47)},
        roles={"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>"},
        added=_mul_tokens(),
        dtype=torch.float32,
    ),
    # meta-llama/Llama-3.1-8B (128256 rows) and allenai/Llama-3.1-Tulu-3-8B* (128264 rows)
    "llama": Family(
        config=dict(
            model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=128256,
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, max_position_embeddings=131072,
            rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            bos_token_id=128000, eos_token_id=128001,
        ),
        tokenizer_entries=128256,
        special={128000: "<|begin_of_text|>", 128001: "<|end_of_text|>"},
        roles={"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": "<|end_of_text|>"},
        added={},
        template=TULU_TEMPLATE,
    ),
    # Qwen/Qwen2.5-Math-7B: 152064 config rows, 151665 tokenizer entries, untied
    "qwen2": Family(
        config=dict(
            model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=152064,
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=4096, rope_theta=10000.0,
            tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643,
            use_sliding_window=False,
        ),
        tokenizer_entries=151665,
        special={151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>"},
        roles={"eos": "<|endoftext|>", "pad": "<|endoftext|>"},
        template=CHATML_TEMPLATE,
    ),
    # google/gemma-3-270m-it: gemma3_text, 262144 rows, tied, 5 sliding : 1 full layers
    "gemma3": Family(
        config=dict(
            model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], vocab_size=262144,
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=8, max_position_embeddings=32768,
            sliding_window=512, layer_types=["sliding_attention", "full_attention"],
            rope_theta=1000000.0, rope_local_base_freq=10000.0, bos_token_id=2,
            eos_token_id=[1, 106], pad_token_id=0,
        ),
        tokenizer_entries=262144,
        special={0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 105: "<start_of_turn>",
                 106: "<end_of_turn>"},
        roles={"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"},
        template=GEMMA_TEMPLATE,
    ),
}  # fmt: skip


def revision(name: str) -> str:
    """A stable 40-hex stand-in commit for a repository id."""
    return hashlib.sha1(name.encode()).hexdigest()


def snapshot_dir(cache: Path, repo_id: str, rev: str, kind: str = "models") -> Path:
    """`<cache>/hub/<kind>--ORG--NAME/snapshots/<rev>/`, with `refs/main` pointing at it."""
    repo = Path(cache) / "hub" / f"{kind}--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def build_tokenizer(family: Family) -> PreTrainedTokenizerFast:
    """Byte-level pieces first, fillers up to the real entry count, specials at their ids."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab: dict[str, int] = {}
    reserved = family.special | family.added
    free = (i for i in range(family.tokenizer_entries) if i not in reserved)
    for piece in sorted(alphabet):
        vocab[piece] = next(free)
    for i in free:
        vocab[f"<filler_{i}>"] = i
    for i, token in family.special.items():
        vocab[token] = i
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    roles = {f"{k}_token": v for k, v in family.roles.items()}
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **roles)
    tok.add_special_tokens({"additional_special_tokens": list(family.special.values())})
    if family.added:  # not special: kept by skip_special_tokens (the mul tokens)
        ordered = [family.added[i] for i in sorted(family.added)]
        tok.add_tokens(ordered)
    if family.template:
        tok.chat_template = family.template
    if "bos" in family.roles and family.config["model_type"] in ("llama", "gemma3_text"):
        from tokenizers import processors

        bos = family.roles["bos"]
        backend = tok.backend_tokenizer
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    return tok


def _shard(state: dict[str, torch.Tensor], out: Path, shards: int) -> None:
    from safetensors.torch import save_file

    names = sorted(state)
    per = -(-len(names) // shards)
    weight_map = {}
    for k in range(shards):
        part = names[k * per : (k + 1) * per]
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n].contiguous() for n in part}, out / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(part, file)
    total = sum(t.numel() * t.element_size() for t in state.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )


def write_checkpoint(
    out: Path,
    family_name: str,
    *,
    state: dict[str, torch.Tensor] | None = None,
    vocab_rows: int | None = None,
    seed: int = 0,
    shards: int = 2,
    config_overrides: dict | None = None,
) -> dict[str, torch.Tensor]:
    """A stand-in checkpoint directory (sharded safetensors + index, config, tokenizer,
    generation config). `state` gives the weights (else a seeded init); returns them."""
    family = FAMILIES[family_name]
    fields = family.config | {"vocab_size": vocab_rows or family.config["vocab_size"]}
    fields |= config_overrides or {}
    config = AutoConfig.for_model(**fields)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=family.dtype)
    if state is not None:
        model.load_state_dict(state, strict=False)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tied = getattr(model.config, "tie_word_embeddings", False)
    weights = {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    _shard(weights, out, shards)
    build_tokenizer(family).save_pretrained(out)
    return {k: v.clone() for k, v in model.state_dict().items()}


def finetune(
    state: dict[str, torch.Tensor], seed: int, scale: float, density: float, extra_rows: int = 0
) -> dict[str, torch.Tensor]:
    """A child of `state`: seeded noise of `scale` (relative to each tensor's std) on a `density`
    share of entries (dense SFT-like at 1.0, sparse RL-like below), embeddings grown by
    `extra_rows` (Tulu's 128264 vs the base's 128256)."""
    gen = torch.Generator().manual_seed(seed)
    child = {}
    for name, tensor in sorted(state.items()):
        t = tensor.float()
        noise = torch.randn(t.shape, generator=gen) * (t.std() if t.numel() > 1 else 1.0) * scale
        keep = torch.rand(t.shape, generator=gen) < density
        t = t + noise * keep
        if extra_rows and t.dim() == 2 and ("embed_tokens" in name or "lm_head" in name):
            t = torch.cat([t, torch.randn(extra_rows, t.shape[1], generator=gen) * 0.02])
        child[name] = t.to(tensor.dtype)
    return child


def write_dataset(cache: Path, repo_id: str, rev: str, splits: dict[str, list[dict]],
                  config: str | None = None) -> Path:  # fmt: skip
    """A dataset repository snapshot: parquet per split (under `<config>/` with a card naming
    the config, as openai/gsm8k; else `data/`, as the default-config repositories)."""
    import pandas as pd

    snap = snapshot_dir(cache, repo_id, rev, kind="datasets")
    folder = config or "data"
    (snap / folder).mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        pd.DataFrame(rows).to_parquet(snap / folder / f"{split}-00000-of-00001.parquet")
    if config:
        card = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
        for split in splits:
            card += [f"  - split: {split}", f"    path: {config}/{split}-*"]
        (snap / "README.md").write_text("\n".join([*card, "---", ""]))
    return snap
