"""Parameter name → (layer, module) on GPT-2, Llama, Qwen2, Mistral and Gemma built offline."""

from __future__ import annotations

from collections import Counter

import pytest

from deltalab.deltas.classify import Location, classify, fused_parts
from tests.deltas_fixtures import build

LLAMA_LIKE = {
    "embedding": 1,
    "attn_q": 2,
    "attn_k": 2,
    "attn_v": 2,
    "attn_o": 2,
    "mlp_gate": 2,
    "mlp_up": 2,
    "mlp_down": 2,
    "norm": 5,  # input + post-attention per layer, final
    "lm_head": 1,
}
EXPECTED = {
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE | {"attn_q": 4, "attn_k": 4, "attn_v": 4},  # q/k/v biases
    "gemma": {k: v for k, v in LLAMA_LIKE.items() if k != "lm_head"},  # tied, not a parameter
    "gpt2": {
        "embedding": 2,  # wte, wpe
        "attn_qkv": 4,  # c_attn weight + bias per layer
        "attn_o": 4,
        "mlp_up": 4,
        "mlp_down": 4,
        "norm": 10,  # ln_1, ln_2 (weight + bias) per layer, ln_f
    },
}


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_every_parameter_is_classified(arch):
    names = [n for n, _ in build(arch).named_parameters()]
    locations = {n: classify(n) for n in names}
    assert Counter(loc.module for loc in locations.values()) == Counter(EXPECTED[arch])
    for name, loc in locations.items():
        in_block = ".layers." in name or ".h." in name
        assert (loc.layer is not None) == in_block, name
        if in_block:
            assert loc.layer in (0, 1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.3.post_attention_layernorm.weight", Location(3, "norm")),
        ("model.layers.3.pre_feedforward_layernorm.weight", Location(3, "norm")),
        ("model.layers.0.self_attn.q_norm.weight", Location(0, "norm")),
        ("model.layers.7.self_attn.o_proj.weight", Location(7, "attn_o")),
        ("model.layers.7.mlp.down_proj.weight", Location(7, "mlp_down")),
        ("transformer.h.11.attn.c_proj.weight", Location(11, "attn_o")),
        ("transformer.h.11.mlp.c_proj.bias", Location(11, "mlp_down")),
        ("h.2.mlp.c_fc.weight", Location(2, "mlp_up")),  # hub gpt2 has no prefix
        ("transformer.ln_f.weight", Location(None, "norm")),
        ("model.norm.weight", Location(None, "norm")),
        ("lm_head.weight", Location(None, "lm_head")),
        ("model.embed_tokens.weight", Location(None, "embedding")),
        ("model.layers.1.block_sparse_moe.gate.weight", Location(1, "router")),
        ("model.layers.1.block_sparse_moe.experts.3.w2.weight", Location(1, "mlp_down")),
        ("gpt_neox.layers.2.attention.dense.weight", Location(2, "attn_o")),
        ("gpt_neox.layers.2.mlp.dense_h_to_4h.weight", Location(2, "mlp_up")),
        ("model.layers.0.self_attn.rotary_emb.inv_freq", Location(0, "other")),
    ],
)
def test_names(name, expected):
    assert classify(name) == expected


def test_gpt2_fused_qkv_splits_into_columns():
    assert fused_parts("transformer.h.0.attn.c_attn.weight", (32, 96)) == [
        ("q", "attn_q", 0, 32),
        ("k", "attn_k", 32, 64),
        ("v", "attn_v", 64, 96),
    ]
    assert fused_parts("transformer.h.0.attn.c_attn.bias", (96,))[2] == ("v", "attn_v", 64, 96)
    assert fused_parts("transformer.h.0.attn.c_attn.weight", (32, 95)) is None
    assert fused_parts("model.layers.0.self_attn.q_proj.weight", (32, 32)) is None
