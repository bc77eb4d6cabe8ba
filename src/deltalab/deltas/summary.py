"""One traversal of an `Analysis`: every delta and pair aggregated (total, module, layer,
layer × module), the contrasts and the claim verdicts, in a `Summary` from which summary.json,
the metrics JSON, the CSVs, the figures and report.md are all written.

Groups are kept in the order the analysis met them (its first tensor of each); each view sorts
them as it shows them (modules in MODULES order, layers by index, top groups by value with ties
as met), so the views cannot disagree about a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deltalab import __version__
from deltalab.deltas.analysis import Analysis
from deltalab.deltas.claims import CLAIM_BY_KEY, VERDICT_SCORE, evaluate_claims
from deltalab.deltas.classify import module_order
from deltalab.deltas.contrasts import contrasts

DEFINITIONS = {
    "norm": "‖Δ‖ (Frobenius) of finetuned − base",
    "rel_norm": "‖Δ‖ / ‖W_base‖",
    "rms": "‖Δ‖ / √n",
    "max_abs": "max |Δ|",
    "frac_zero": "share of entries with Δ exactly 0",
    "frac_unchanged_atol": "share of entries with |Δ| ≤ atol",
    "frac_unchanged_bf16": "share with |Δ| ≤ 2⁻⁹·|W| (≤ half a bf16 ulp of W: bf16 rounds it away)",
    "energy_share": "‖Δ‖² of the group / ‖Δ‖² of the model",
    "energy_top_share": "share of ‖Δ‖² in each tensor's top `energy_top_fraction` entries",
    "energy_kept_sparse": "share of ‖Δ‖² kept by each tensor's top `top_ratio` entries",
    "stable_rank": "‖Δ‖²_F / σ₁² (mean over 2-D tensors)",
    "effective_rank": "exp(entropy of σ/Σσ) (Roy & Vetterli; mean over 2-D tensors)",
    "effective_rank_frac": "effective rank / min(rows, cols)",
    "cosine": "cos(Δa, Δb) over the shared entries",
    "sign_agreement": "share of entries where both deltas are non-zero that have the same sign",
    "magnitude_ratio": "‖Δa‖ / ‖Δb‖",
    "*_sparse": "the same after keeping each tensor's top `top_ratio` entries of each delta",
    "mask_jaccard": "|Ma ∩ Mb| / |Ma ∪ Mb| of the two top-`top_ratio` masks",
    "opposite_sign": "share of all shared entries where both deltas are non-zero and have "
    "opposite signs (sign conflicts per parameter)",
    "opposite_sign_of_both": "the same among the entries where both are non-zero "
    "(1 − sign_agreement)",
    "opposite_sign_sparse": "share of all shared entries that both top-`top_ratio` deltas keep "
    "with opposite signs",
    "verdict": "1 holds, 0.5 partly, 0 does not hold (rules in report.md)",
}
# the per-module numbers of the metrics JSON (and of the pair heatmaps)
METRIC_KEYS_SMALL = ("rel_norm", "frac_unchanged_atol", "energy_share", "energy_top_share")
PAIR_KEYS_SMALL = ("cosine", "sign_agreement", "cosine_sparse", "sign_agreement_sparse")


def _in_module_order(groups: dict[str, dict]) -> dict[str, dict]:
    return {m: groups[m] for m in module_order(groups)}


@dataclass
class DeltaSummary:
    """Metrics of one delta: its total and its groups, each as the analysis met them."""

    sources: dict[str, str]  # {"base": source, "finetuned": source}
    method: str | None
    sum_d2: float  # ‖Δ‖² of the model: the denominator of every energy share
    total: dict[str, float]
    by_module: dict[str, dict[str, float]]
    by_layer: dict[int | None, dict[str, float]]
    by_layer_module: dict[tuple[int | None, str], dict[str, float]]
    resized: dict[str, dict[str, float]]
    skipped: list[str]

    @property
    def modules(self) -> dict[str, dict[str, float]]:
        """By module, in MODULES order."""
        return _in_module_order(self.by_module)

    @property
    def layers(self) -> dict[int | None, dict[str, float]]:
        """By layer: the non-layer tensors (None) first, then by index."""
        return dict(sorted(self.by_layer.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)))

    def top(self, by: str, metric: str, n: int = 3) -> list[tuple[object, float]]:
        """The n groups ("module" or "layer_module") with the largest positive `metric`."""
        groups = self.by_module if by == "module" else self.by_layer_module
        ranked = [(k, v[metric]) for k, v in groups.items()]
        ranked = [(k, v) for k, v in ranked if math.isfinite(v) and v > 0]
        return sorted(ranked, key=lambda kv: -kv[1])[:n]


@dataclass
class PairSummary:
    """Comparison metrics of two deltas of one base, with groups as the analysis met them."""

    a: str
    b: str
    total: dict[str, float]  # {} when the two deltas share no tensor
    by_module: dict[str, dict[str, float]]
    by_layer_module: dict[tuple[int | None, str], dict[str, float]]

    @property
    def modules(self) -> dict[str, dict[str, float]]:
        return _in_module_order(self.by_module)


@dataclass
class Summary:
    """Everything the report shows, aggregated once from `analysis`."""

    analysis: Analysis
    deltas: dict[str, DeltaSummary] = field(default_factory=dict)
    pairs: dict[str, PairSummary] = field(default_factory=dict)
    contrast: dict[str, dict] = field(default_factory=dict)  # see `contrasts`
    claims: list[dict] = field(default_factory=list)  # see `evaluate_claims`
    tensors: list[dict] = field(default_factory=list)  # Analysis.tensors with energy_share


def _delta_groups(analysis: Analysis, label: str, by: str, d2: float) -> dict:
    return {k: s.metrics(d2) for k, s in analysis.grouped(label, by).items()}


def _pair_groups(analysis: Analysis, key: str, by: str) -> dict:
    return {k: s.metrics() for k, s in analysis.pair_grouped(key, by).items()}


def summarize(analysis: Analysis) -> Summary:
    """Aggregate `analysis` per delta (total, module, layer, layer × module) and per pair."""
    out = Summary(analysis)
    for label, sources in analysis.deltas.items():
        total = analysis.delta_total(label)
        d2 = total.sum_d2
        out.deltas[label] = DeltaSummary(
            sources=sources,
            method=analysis.params.method_of(label),
            sum_d2=d2,
            total=total.metrics(d2),
            by_module=_delta_groups(analysis, label, "module", d2),
            by_layer=_delta_groups(analysis, label, "layer", d2),
            by_layer_module=_delta_groups(analysis, label, "layer_module", d2),
            resized=analysis.resized.get(label, {}),
            skipped=analysis.skipped.get(label, []),
        )
    for key, (a, b) in analysis.pairs.items():
        total = analysis.pair_grouped(key, "total").get("total")
        out.pairs[key] = PairSummary(
            a=a,
            b=b,
            total=total.metrics() if total else {},
            by_module=_pair_groups(analysis, key, "module"),
            by_layer_module=_pair_groups(analysis, key, "layer_module"),
        )
    out.contrast = contrasts(analysis)
    out.claims = evaluate_claims(
        out.contrast,
        {label: d.total for label, d in out.deltas.items()},
        {label: d.method for label, d in out.deltas.items()},
    )
    totals = {label: d.sum_d2 for label, d in out.deltas.items()}
    out.tensors = [
        r | {"energy_share": r["norm"] ** 2 / totals[r["delta"]] if totals[r["delta"]] else None}
        for r in analysis.tensors
    ]
    return out


# ---------------------------------------------------------------------------------------------
# The two JSON views


def _clean(obj: object) -> object:
    """JSON-safe: NaN/inf → None, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _numbers(metrics: dict[str, float], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if (keys is None or k in keys) and isinstance(v, int | float) and math.isfinite(v)
    }


def _layer_key(layer: int | None) -> str:
    return "none" if layer is None else str(layer)


def _with_rule(row: dict) -> dict:
    c = CLAIM_BY_KEY[row["claim"]]
    return row | {"rule": c.rule(), "published": c.published}


def summary_json(s: Summary) -> dict:
    """summary.json: everything measured, per delta (total, module, layer) and per pair."""
    analysis = s.analysis
    selected = {"selected": analysis.selected} if analysis.selected is not None else {}
    return _clean(
        {
            "deltalab_version": __version__,
            # the tensor filter is recorded when one was used
            "params": analysis.params.model_dump(
                exclude={k for k in ("include", "exclude") if not getattr(analysis.params, k)}
            ),
            **selected,
            "deltas": {
                label: {
                    **d.sources,
                    "total": d.total,
                    "modules": d.modules,
                    "layers": {_layer_key(k): v for k, v in d.layers.items()},
                    "resized": d.resized,
                    "skipped_tensors": d.skipped,
                    "method": d.method,
                }
                for label, d in s.deltas.items()
            },
            "pairs": {
                key: {"a": p.a, "b": p.b, "total": p.total, "modules": p.modules}
                for key, p in s.pairs.items()
            },
            "contrast": s.contrast,
            "claims": [_with_rule(r) for r in s.claims],
            "definitions": DEFINITIONS,
        }
    )


def metrics_json(s: Summary) -> dict:
    """A small numbers-only view for `dvc metrics show` (NaN dropped, unique nested keys)."""
    out: dict = {
        "deltas": {
            label: {
                "total": _numbers(d.total),
                "modules": {m: _numbers(v, METRIC_KEYS_SMALL) for m, v in d.modules.items()},
            }
            for label, d in s.deltas.items()
        },
        "pairs": {
            key: {
                "total": _numbers(p.total),
                "modules": {m: _numbers(v, PAIR_KEYS_SMALL) for m, v in p.modules.items()},
            }
            for key, p in s.pairs.items()
        },
    }
    if not out["pairs"]:
        del out["pairs"]
    if s.contrast:
        out["contrast"] = {k: _numbers(v["total"]) for k, v in s.contrast.items()}
    for row in s.claims:
        if row["verdict"] in VERDICT_SCORE:
            out.setdefault("claims", {}).setdefault(row["claim"], {})[row["subject"]] = {
                "value": float(row["value"]),
                "verdict": VERDICT_SCORE[row["verdict"]],
            }
    return out


def summary(analysis: Analysis) -> dict:
    """summary.json of `analysis`."""
    return summary_json(summarize(analysis))


def metrics(analysis: Analysis) -> dict:
    """The metrics JSON of `analysis` (metrics/deltas/<member>.json)."""
    return metrics_json(summarize(analysis))


def claims(analysis: Analysis) -> list[dict]:
    """The claim rows of `analysis`: claim, subject, value, verdict."""
    return summarize(analysis).claims
