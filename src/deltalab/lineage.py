"""The tiny study's lineage, in one place: which checkpoint each post-training stage starts from,
which checkpoints the task vectors and the merge are made of, and which models are compared.

Stage scripts and the compare stage read these tables instead of naming model roles themselves.
"""

from __future__ import annotations

# post-training stage → the checkpoint it was trained (or merged) from
PARENTS = {
    "dpo": "sft_gsm8k",
    "rlvr": "sft_tulu",
    "merged": "sft_tulu",
    "masked_dpo": "sft_gsm8k",
    "masked_dpo_random": "sft_gsm8k",
}
# Delta-track models also compared with each other (reference, treatment), when both are evaluated.
RIVALS = [("dpo", "masked_dpo"), ("masked_dpo_random", "masked_dpo")]

# The DoTS triple: τ_name = SOURCES[name] − VECTOR_BASE, merged as base + Σ scale · τ.
VECTOR_BASE = "sft_tulu"
VECTOR_SOURCES = {"sft": "sft_gsm8k", "rlvr": "rlvr"}  # in the order of the merge scales

# The masks come from this DPO run against its parent; masked DPO trains from the same parent.
MASK_RUN = "dpo"
