"""The published numbers our deltas are compared with, as data: each claim, its source, the
metric it is read from, and the verdict bands; `evaluate_claims` applies them to our numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

VERDICT_SCORE = {"holds": 1.0, "partly": 0.5, "does not hold": 0.0}


@dataclass(frozen=True)
class Claim:
    """A published number and the rule that says whether ours agrees with it.

    `bands` are (verdict, low, high), both ends included, tried in order; a value in none of
    them does not hold, a missing value (NaN) is "n/a".
    """

    key: str
    text: str
    published: str
    source: str
    measured: str
    subjects: str  # "contrast": each contrasted pair; "rl" / "sft": each delta of that method
    metric: str
    bands: tuple[tuple[str, float, float], ...]
    pct: bool = False

    def verdict(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "n/a"
        for verdict, low, high in self.bands:
            if low <= value <= high:
                return verdict
        return "does not hold"

    def format(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "–"
        return f"{100 * value:.1f}%" if self.pct else f"{value:.3g}×"

    def rule(self) -> str:
        def num(v: float) -> str:
            return f"{100 * v:g}%" if self.pct else f"{v:g}"

        parts = []
        for verdict, low, high in self.bands:
            if math.isinf(high):
                cond = f"x ≥ {num(low)}"
            elif low <= 0:
                cond = f"x ≤ {num(high)}"
            else:
                cond = f"{num(low)} ≤ x ≤ {num(high)}"
            parts.append(f"{verdict} if {cond}")
        return "; else ".join(parts) + "; else does not hold"


_DOTS = "DoTS"
_SUBNET = "Mukherjee et al. 2025"
SOURCES = {
    _DOTS: "merging sparsified SFT and RLVR task vectors of one base, scales searched on "
    "label-free objectives",
    _SUBNET: "reinforcement learning finetunes small subnetworks of large language models "
    "(bf16 checkpoints; unchanged = |Δ| ≤ 1e-5)",
}
CLAIMS = (
    Claim(
        "magnitude_ratio",
        "SFT and RLVR task vectors of one base differ ~30× in magnitude",
        "~30×",
        _DOTS,
        "‖τ_a‖/‖τ_b‖",
        "contrast",
        "magnitude_ratio",
        (("holds", 10.0, 100.0), ("partly", 2.0, math.inf)),
    ),
    Claim(
        "opposite_sign",
        "~45% of the entries of the two vectors have opposite signs",
        "~45%",
        _DOTS,
        "opposite signs, dense",
        "contrast",
        "opposite_sign",
        (("holds", 0.35, 0.55), ("partly", 0.25, 0.65)),
        pct=True,
    ),
    Claim(
        "opposite_sign_sparse",
        "sparsifying both vectors cuts sign conflicts to ~7%",
        "~7%",
        _DOTS,
        "opposite signs, both sparse",
        "contrast",
        "opposite_sign_sparse",
        (("holds", 0.0, 0.15), ("partly", 0.0, 0.25)),
        pct=True,
    ),
    Claim(
        "rl_unchanged",
        "RL (DPO, RLVR) updates only 5–30% of the bf16 parameters",
        "70–95% unchanged",
        _SUBNET,
        "bf16-unchanged",
        "rl",
        "frac_unchanged_bf16",
        (("holds", 0.70, 0.95), ("partly", 0.5, 1.0)),
        pct=True,
    ),
    Claim(
        "sft_unchanged",
        "SFT updates 85–94% of the bf16 parameters",
        "6–15% unchanged",
        _SUBNET,
        "bf16-unchanged",
        "sft",
        "frac_unchanged_bf16",
        (("holds", 0.06, 0.15), ("partly", 0.0, 0.5)),
        pct=True,
    ),
    Claim(
        "rl_rank",
        "RL deltas are nearly full rank",
        "nearly full rank",
        _SUBNET,
        "effective rank / min(rows, cols), mean of 2-D tensors",
        "rl",
        "effective_rank_frac",
        (("holds", 0.5, 1.0), ("partly", 0.25, 1.0)),
        pct=True,
    ),
)
CLAIM_BY_KEY = {c.key: c for c in CLAIMS}
# the training methods whose deltas are the subjects of a per-method claim
CLAIM_METHODS = {"rl": ("dpo", "rlvr"), "sft": ("sft",)}
NO_SUBJECT = {"contrast": "no contrasted pair", "rl": "no dpo/rlvr delta", "sft": "no sft delta"}


def evaluate_claims(
    contrast: Mapping[str, Mapping],
    totals: Mapping[str, Mapping[str, float]],
    methods: Mapping[str, str | None],
) -> list[dict]:
    """One row per (claim, subject): value, verdict; a claim with no subject gets one n/a row.

    `contrast`: pair key → {"total": contrast metrics}; `totals`: delta label → its total
    metrics; `methods`: delta label → training method (None when unknown).
    """
    rows: list[dict] = []
    for c in CLAIMS:
        if c.subjects == "contrast":
            subjects = [(k, v["total"].get(c.metric)) for k, v in contrast.items()]
        else:
            subjects = [
                (label, total[c.metric])
                for label, total in totals.items()
                if methods[label] in CLAIM_METHODS[c.subjects]
            ]
        for subject, value in subjects or [(None, None)]:
            rows.append(
                {
                    "claim": c.key,
                    "subject": subject,
                    "value": value,
                    "verdict": c.verdict(value) if subject else "n/a",
                }
            )
    return rows


def claims_table() -> str:
    """The claims as a markdown table (docs/deltas.md's is generated from this)."""
    from deltalab.report.tables import markdown_table

    subjects = {"contrast": "each contrasted pair", "rl": "each dpo/rlvr delta",
                "sft": "each sft delta"}  # fmt: skip
    rows = [
        [
            f"`{c.key}`",
            f"{c.text} ({c.source})",
            c.published,
            f"{c.measured} (`{c.metric}`) of {subjects[c.subjects]}",
            c.rule(),
        ]
        for c in CLAIMS
    ]
    return markdown_table(["key", "claim", "published", "ours", "verdict rule"], rows)
