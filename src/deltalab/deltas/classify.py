"""Tensor name → (layer, module) for GPT-2, Llama/Qwen2/Mistral, Gemma and similar HF naming.

Norms are recognised before attention and MLP so that `post_attention_layernorm` is a norm, not
attention. GPT-2's fused `c_attn` (a Conv1D whose output columns are q | k | v) can be split into
three analysis units by `fused_parts`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MODULES = (
    "embedding",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_qkv",
    "attn_o",
    "mlp_gate",
    "mlp_up",
    "mlp_gate_up",
    "mlp_down",
    "router",
    "norm",
    "lm_head",
    "other",
)

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|block)\.(\d+)\.")
_NORM = re.compile(r"(norm|(?:^|\.)ln_?(?:\d+|f)?(?:\.|$)|layer_?norm|rms_?norm)")
_ATTN = re.compile(r"(?:^|\.)(self_attn|attn|attention|self_attention|mixer)(?:\.|$)")
_MLP = re.compile(r"(?:^|\.)(mlp|feed_forward|ffn|block_sparse_moe|moe)(?:\.|$)")
_LEAF_MODULE = {
    # attention
    "q_proj": "attn_q",
    "query": "attn_q",
    "k_proj": "attn_k",
    "key": "attn_k",
    "v_proj": "attn_v",
    "value": "attn_v",
    "o_proj": "attn_o",
    "out_proj": "attn_o",
    "c_attn": "attn_qkv",
    "qkv_proj": "attn_qkv",
    "query_key_value": "attn_qkv",
    "wqkv": "attn_qkv",
    # MLP
    "gate_proj": "mlp_gate",
    "w1": "mlp_gate",
    "up_proj": "mlp_up",
    "w3": "mlp_up",
    "c_fc": "mlp_up",
    "fc1": "mlp_up",
    "dense_h_to_4h": "mlp_up",
    "down_proj": "mlp_down",
    "w2": "mlp_down",
    "fc2": "mlp_down",
    "dense_4h_to_h": "mlp_down",
    "gate_up_proj": "mlp_gate_up",
}
_EMBEDDING = re.compile(
    r"(?:^|\.)(embed_tokens|wte|wpe|word_embeddings|embed_in|embed_positions|"
    r"position_embeddings|token_embedding|tok_embeddings)(?:\.|$)"
)
_LM_HEAD = re.compile(r"(?:^|\.)(lm_head|embed_out|output)(?:\.|$)")


@dataclass(frozen=True)
class Location:
    layer: int | None
    module: str


def classify(name: str) -> Location:
    """Layer index (None outside the blocks) and module of a parameter name."""
    lower = name.lower()
    m = _LAYER.search(lower)
    layer = int(m.group(1)) if m else None
    parts = lower.split(".")
    leaf = parts[-2] if len(parts) >= 2 and parts[-1] in {"weight", "bias", "scale"} else parts[-1]
    if _NORM.search(lower) and not _LEAF_MODULE.get(leaf):
        return Location(layer, "norm")
    if layer is None:
        if _EMBEDDING.search(lower):
            return Location(None, "embedding")
        if _LM_HEAD.search(lower):
            return Location(None, "lm_head")
    module = _LEAF_MODULE.get(leaf)
    in_attn, in_mlp = bool(_ATTN.search(lower)), bool(_MLP.search(lower))
    if leaf in {"c_proj", "dense"}:  # GPT-2 / NeoX reuse these names in attention and MLP
        module = "attn_o" if in_attn else "mlp_down" if in_mlp else None
    elif leaf in {"gate", "router"} and in_mlp:  # MoE routers (Mixtral `mlp.gate`)
        module = "router"
    if module is None:
        module = "other"
    return Location(layer, module)


def fused_parts(name: str, shape: tuple[int, ...]) -> list[tuple[str, str, int, int]] | None:
    """Column slices (suffix, module, start, stop) of a fused q|k|v tensor, or None.

    GPT-2's `attn.c_attn` is a Conv1D: weight (d, 3d) and bias (3d,), outputs ordered q, k, v.
    """
    if not name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
        return None
    cols = shape[-1]
    if len(shape) not in (1, 2) or cols % 3 or (len(shape) == 2 and cols != 3 * shape[0]):
        return None
    d = cols // 3
    return [("q", "attn_q", 0, d), ("k", "attn_k", d, 2 * d), ("v", "attn_v", 2 * d, 3 * d)]


def module_order(modules: Iterable[str]) -> list[str]:
    """The distinct `modules` in the order of MODULES (tables and JSON list modules so)."""
    present = set(modules)
    return [m for m in MODULES if m in present]
