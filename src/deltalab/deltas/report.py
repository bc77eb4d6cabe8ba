"""Files of a delta analysis: summary JSON, per-tensor and per-layer CSVs, figures, report.md."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deltalab import __version__
from deltalab.deltas.analysis import Analysis, DeltaSums, PairSums, module_order, pair_key
from deltalab.deltas.classify import MODULES
from deltalab.errors import ConfigError
from deltalab.paths import safe_name

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
_TENSOR_COLS = [
    "delta",
    "tensor",
    "layer",
    "module",
    "shape",
    "n_params",
    "norm",
    "rel_norm",
    "rms",
    "max_abs",
    "frac_zero",
    "frac_unchanged_atol",
    "frac_unchanged_bf16",
    "energy_share",
    "energy_top_share",
    "energy_kept_sparse",
    "threshold_sparse",
    "stable_rank",
    "effective_rank",
    "effective_rank_frac",
]
_METRIC_KEYS_SMALL = ("rel_norm", "frac_unchanged_atol", "energy_share", "energy_top_share")
_PAIR_KEYS_SMALL = ("cosine", "sign_agreement", "cosine_sparse", "sign_agreement_sparse")


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


def summary(analysis: Analysis) -> dict:
    """Everything measured, aggregated per delta (total, module, layer) and per pair."""
    deltas = {}
    for label, sources in analysis.deltas.items():
        total = analysis.delta_total(label)
        d2 = total.sum_d2
        modules = analysis.grouped(label, "module")
        layers = analysis.grouped(label, "layer")
        deltas[label] = {
            **sources,
            "total": total.metrics(d2),
            "modules": {m: modules[m].metrics(d2) for m in module_order(list(modules))},
            "layers": {
                _layer_key(k): v.metrics(d2)
                for k, v in sorted(layers.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0))
            },
            "resized": analysis.resized.get(label, {}),
            "skipped_tensors": analysis.skipped.get(label, []),
        }
    pairs = {}
    for key, (a, b) in analysis.pairs.items():
        modules = analysis.pair_grouped(key, "module")
        pairs[key] = {
            "a": a,
            "b": b,
            "total": analysis.pair_grouped(key, "total").get("total", None),
            "modules": {m: modules[m].metrics() for m in module_order(list(modules))},
        }
        pairs[key]["total"] = pairs[key]["total"].metrics() if pairs[key]["total"] else {}
    for label in deltas:
        deltas[label]["method"] = analysis.params.method_of(label)
    contrast = contrasts(analysis)
    selected = {"selected": analysis.selected} if analysis.selected is not None else {}
    return _clean(
        {
            "deltalab_version": __version__,
            "params": analysis.params.model_dump(),
            **selected,
            "deltas": deltas,
            "pairs": pairs,
            "contrast": contrast,
            "claims": [
                r | {"rule": c.rule(), "published": c.published}
                for r in claims(analysis, contrast)
                for c in CLAIMS
                if c.key == r["claim"]
            ],
            "definitions": DEFINITIONS,
        }
    )


def metrics(analysis: Analysis) -> dict:
    """A small numbers-only view for `dvc metrics show` (NaN dropped, unique nested keys)."""
    out: dict = {"deltas": {}, "pairs": {}}
    for label in analysis.deltas:
        total = analysis.delta_total(label)
        modules = analysis.grouped(label, "module")
        out["deltas"][label] = {
            "total": _numbers(total.metrics(total.sum_d2)),
            "modules": {
                m: _numbers(modules[m].metrics(total.sum_d2), _METRIC_KEYS_SMALL)
                for m in module_order(list(modules))
            },
        }
    for key in analysis.pairs:
        total = analysis.pair_grouped(key, "total").get("total")
        modules = analysis.pair_grouped(key, "module")
        out["pairs"][key] = {
            "total": _numbers(total.metrics()) if total else {},
            "modules": {
                m: _numbers(modules[m].metrics(), _PAIR_KEYS_SMALL)
                for m in module_order(list(modules))
            },
        }
    if not out["pairs"]:
        del out["pairs"]
    contrast = contrasts(analysis)
    if contrast:
        out["contrast"] = {k: _numbers(v["total"]) for k, v in contrast.items()}
    for row in claims(analysis, contrast):
        if row["verdict"] in VERDICT_SCORE:
            out.setdefault("claims", {}).setdefault(row["claim"], {})[row["subject"]] = {
                "value": float(row["value"]),
                "verdict": VERDICT_SCORE[row["verdict"]],
            }
    return out


# ---------------------------------------------------------------------------------------------
# Methods compared: SFT vs RLVR head-to-head and the published numbers


def check_contrast(bases: Mapping[str, str], contrast: Sequence[tuple[str, str]]) -> None:
    """Every contrasted label must be a delta, and both deltas of a contrast must share a base
    (`bases`: label → base name). Raises ConfigError naming the offending labels."""
    for a, b in contrast:
        for label in (a, b):
            if label not in bases:
                raise ConfigError(
                    f"contrast ({a}, {b}): {label!r} is not a delta here "
                    f"(deltas: {', '.join(bases) or 'none'})"
                )
        if bases[a] != bases[b]:
            raise ConfigError(
                f"contrast ({a}, {b}): the deltas have different bases ({bases[a]}, "
                f"{bases[b]}); only deltas of one base are compared head-to-head"
            )


def _swapped(p: PairSums) -> PairSums:
    return PairSums(
        **{f: getattr(p, f) for f in PairSums.__dataclass_fields__}
        | {"a2": p.b2, "b2": p.a2, "a2_s": p.b2_s, "b2_s": p.a2_s}
    )


def oriented_pair(analysis: Analysis, a: str, b: str, by: str = "total") -> dict:
    """PairSums of deltas a and b (grouped like `Analysis.pair_grouped`), with a as the
    numerator of the magnitude ratios whichever order the analysis paired them in."""
    if pair_key(a, b) in analysis.pairs:
        return analysis.pair_grouped(pair_key(a, b), by)
    if pair_key(b, a) in analysis.pairs:
        return {k: _swapped(v) for k, v in analysis.pair_grouped(pair_key(b, a), by).items()}
    bases = {label: d["base"] for label, d in analysis.deltas.items()}
    check_contrast(bases, [(a, b)])
    raise ConfigError(f"contrast ({a}, {b}): the two deltas were not read together")


def contrast_metrics(p: PairSums, top_ratio: float) -> dict[str, float]:
    """Head-to-head numbers of two deltas a, b of one base (a: SFT-like, b: RL-like)."""

    def ratio(x: float, y: float) -> float:
        return x / y if y > 0 else math.nan

    return {
        "norm_a": math.sqrt(p.a2),
        "norm_b": math.sqrt(p.b2),
        "magnitude_ratio": ratio(math.sqrt(p.a2), math.sqrt(p.b2)),
        "magnitude_ratio_sparse": ratio(math.sqrt(p.a2_s), math.sqrt(p.b2_s)),
        "cosine": ratio(p.dot, math.sqrt(p.a2 * p.b2)),
        "cosine_sparse": ratio(p.dot_s, math.sqrt(p.a2_s * p.b2_s)),
        "opposite_sign": ratio(p.both - p.agree, p.n),
        "opposite_sign_sparse": ratio(p.both_s - p.agree_s, p.n),
        "opposite_sign_of_both": ratio(p.both - p.agree, p.both),
        "opposite_sign_of_both_sparse": ratio(p.both_s - p.agree_s, p.both_s),
        "both_nonzero": ratio(p.both, p.n),
        "both_kept": ratio(p.inter, p.n),
        "mask_jaccard": ratio(p.inter, p.union),
        "mask_jaccard_random": top_ratio / (2 - top_ratio),
    }


def active_contrast(analysis: Analysis) -> list[tuple[str, str]]:
    """The configured contrasts whose two labels were both analysed (the stage and the CLI
    check them strictly with `check_contrast`; a library call with other labels skips them)."""
    return [(a, b) for a, b in analysis.params.contrast if {a, b} <= set(analysis.deltas)]


def contrasts(analysis: Analysis) -> dict[str, dict]:
    """`a_vs_b` → {"a", "b", "total": contrast metrics, "modules": {module: metrics}}."""
    out = {}
    rho = analysis.params.top_ratio
    for a, b in active_contrast(analysis):
        total = oriented_pair(analysis, a, b).get("total", PairSums())
        modules = oriented_pair(analysis, a, b, "module")
        out[pair_key(a, b)] = {
            "a": a,
            "b": b,
            "total": contrast_metrics(total, rho),
            "modules": {m: contrast_metrics(modules[m], rho) for m in module_order(list(modules))},
        }
    return out


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
_CLAIM_METHODS = {"rl": ("dpo", "rlvr"), "sft": ("sft",)}
_NO_SUBJECT = {"contrast": "no contrasted pair", "rl": "no dpo/rlvr delta", "sft": "no sft delta"}


def claims(analysis: Analysis, contrast: Mapping[str, dict] | None = None) -> list[dict]:
    """One row per (claim, subject): value, verdict; a claim with no subject gets one n/a row."""
    contrast = contrasts(analysis) if contrast is None else contrast
    rows: list[dict] = []
    for c in CLAIMS:
        if c.subjects == "contrast":
            subjects = [(k, v["total"].get(c.metric)) for k, v in contrast.items()]
        else:
            subjects = []
            for label in analysis.deltas:
                if analysis.params.method_of(label) in _CLAIM_METHODS[c.subjects]:
                    total = analysis.delta_total(label)
                    subjects.append((label, total.metrics(total.sum_d2)[c.metric]))
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


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt_csv(row.get(k)) for k in columns})


def _fmt_csv(v: object) -> object:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def _layer_rows(analysis: Analysis) -> list[dict]:
    rows = []
    for label in analysis.deltas:
        total = analysis.delta_total(label).sum_d2
        grouped = analysis.grouped(label, "layer_module")
        for (layer, module), s in sorted(grouped.items(), key=_lm_sort):
            rows.append({"delta": label, "layer": layer, "module": module} | s.metrics(total))
    return rows


def _lm_sort(kv: tuple) -> tuple:
    (layer, module), _ = kv
    return (layer is not None, layer or 0, MODULES.index(module))


def write_report(analysis: Analysis, out_dir: Path, title: str = "Weight deltas") -> None:
    """Write summary.json, metrics.json, CSVs, PNG figures and report.md into `out_dir`."""
    from deltalab.atomic import write_json
    from deltalab.deltas import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summ = summary(analysis)
    write_json(out_dir / "summary.json", summ)

    totals = {label: analysis.delta_total(label).sum_d2 for label in analysis.deltas}
    tensor_rows = [
        r | {"energy_share": r["norm"] ** 2 / totals[r["delta"]] if totals[r["delta"]] else None}
        for r in analysis.tensors
    ]
    _write_csv(out_dir / "tensors.csv", tensor_rows, _TENSOR_COLS)
    layer_rows = _layer_rows(analysis)
    layer_cols = ["delta", "layer", "module", *DeltaSums().metrics(1.0)]
    _write_csv(out_dir / "layers.csv", layer_rows, layer_cols)
    pair_cols = ["pair", "tensor", "layer", "module", *_pair_metric_names()]
    if analysis.pairs:
        _write_csv(out_dir / "pairs.csv", analysis.pair_tensors, pair_cols)
        prow = []
        for key in analysis.pairs:
            for (layer, module), s in analysis.pair_grouped(key, "layer_module").items():
                prow.append({"pair": key, "layer": layer, "module": module} | s.metrics())
        _write_csv(out_dir / "pair_layers.csv", prow, [c for c in pair_cols if c != "tensor"])

    figures: list[tuple[str, str]] = []
    for label in analysis.deltas:
        grouped = analysis.grouped(label, "layer_module")
        total = totals[label]
        values = {k: s.metrics(total) for k, s in grouped.items()}
        name = f"heatmap_{safe_name(label)}.png"
        plots.heatmaps(
            [
                ("‖Δ‖/‖W‖", {k: v["rel_norm"] for k, v in values.items()}, True),
                (
                    "unchanged (|Δ| ≤ atol)",
                    {k: v["frac_unchanged_atol"] for k, v in values.items()},
                    False,
                ),
                ("energy share", {k: v["energy_share"] for k, v in values.items()}, True),
            ],
            f"{label}: layer × module",
            out_dir / name,
        )
        figures.append((f"{label}: layer × module", name))
    for key in analysis.pairs:
        values = {k: s.metrics() for k, s in analysis.pair_grouped(key, "layer_module").items()}
        name = f"heatmap_{safe_name(key)}.png"
        panels = [
            (metric, {k: v[metric] for k, v in values.items()}, False)
            for metric in _PAIR_KEYS_SMALL
        ]
        plots.heatmaps(panels, f"{key}: layer × module", out_dir / name)
        figures.append((f"{key}: layer × module", name))
    if analysis.deltas:
        plots.methods(
            {
                label: {
                    "method": analysis.params.method_of(label),
                    "total": d["total"],
                    "modules": {m: v["energy_share"] for m, v in d["modules"].items()},
                }
                for label, d in summ["deltas"].items()
            },
            out_dir / "methods.png",
        )
        figures.append(("Methods: unchanged shares and where the energy goes", "methods.png"))
    hists: dict[str, dict] = {}
    for (label, module), h in analysis.histograms.items():
        hists.setdefault(label, {})[module] = h
    if hists:
        plots.histograms(hists, out_dir / "hist_abs_delta.png")
        figures.append(("|Δ| distribution", "hist_abs_delta.png"))
    (out_dir / "report.md").write_text(markdown(analysis, summ, figures, title))


def _pair_metric_names() -> list[str]:
    from deltalab.deltas.analysis import PairSums

    return list(PairSums().metrics())


def _f(v: object, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _delta_row(name: str, m: dict) -> list[str]:
    return [
        name,
        _f(m.get("n_params") and int(m["n_params"])),
        _f(m.get("rel_norm")),
        _f(m.get("rms")),
        _f(m.get("max_abs")),
        _f(m.get("frac_zero"), True),
        _f(m.get("frac_unchanged_atol"), True),
        _f(m.get("frac_unchanged_bf16"), True),
        _f(m.get("energy_share"), True),
        _f(m.get("energy_top_share"), True),
        _f(m.get("energy_kept_sparse"), True),
        _f(m.get("stable_rank")),
        _f(m.get("effective_rank_frac"), True),
    ]


def _group_name(key: object) -> str:
    if isinstance(key, tuple):
        layer, module = key
        return module if layer is None else f"L{layer} {module}"
    return str(key)


def top_groups(analysis: Analysis, label: str, by: str, metric: str, n: int = 3) -> list:
    """The n groups ("module" or "layer_module") of one delta with the largest `metric`."""
    total = analysis.delta_total(label).sum_d2
    values = {k: s.metrics(total)[metric] for k, s in analysis.grouped(label, by).items()}
    ranked = [(k, v) for k, v in values.items() if math.isfinite(v) and v > 0]
    return sorted(ranked, key=lambda kv: -kv[1])[:n]


def _tops(analysis: Analysis, label: str, by: str, metric: str, pct: bool) -> str:
    return ", ".join(
        f"{_group_name(k)} {_f(v, pct)}" for k, v in top_groups(analysis, label, by, metric)
    )


_CONTRAST_COLS = [
    ("‖τ_a‖/‖τ_b‖", "magnitude_ratio", False),
    ("cosine", "cosine", False),
    ("opposite signs", "opposite_sign", True),
    ("opposite, of both ≠ 0", "opposite_sign_of_both", True),
    ("‖τ_a‖/‖τ_b‖ sparse", "magnitude_ratio_sparse", False),
    ("cosine sparse", "cosine_sparse", False),
    ("opposite sparse", "opposite_sign_sparse", True),
    ("opposite sparse, of both kept", "opposite_sign_of_both_sparse", True),
    ("mask Jaccard", "mask_jaccard", False),
]


def methods_markdown(analysis: Analysis, summ: dict) -> str:
    """The methods section: update sparsity, rank and where each delta moves the weights,
    the head-to-head contrasts, and the published numbers beside ours with verdicts."""
    p = analysis.params
    ratio_pct = f"{100 * p.top_ratio:g}%"
    out = [
        "\n## Methods compared: SFT, DPO, RLVR\n\n",
        "Update sparsity and rank of each delta. Checkpoints stored in fp32, like the tiny "
        "models of this pipeline, hold nothing in bf16: their `bf16-unchanged` share counts the "
        "entries whose update storing both checkpoints in bf16 would round away (|Δ| ≤ 2⁻⁹·|W|, "
        "half a bf16 step of W), not weights that stayed bit-identical as in the published bf16 "
        "numbers.\n\n",
    ]
    rows = []
    for label, d in summ["deltas"].items():
        m = d["total"]
        bf16 = m.get("frac_unchanged_bf16")
        rows.append(
            [
                label,
                d.get("method") or "–",
                _f(m.get("norm")),
                _f(m.get("rel_norm")),
                _f(m.get("frac_zero"), True),
                _f(m.get("frac_unchanged_atol"), True),
                _f(bf16, True),
                _f(None if bf16 is None else 1 - bf16, True),
                _f(m.get("stable_rank")),
                _f(m.get("effective_rank_frac"), True),
            ]
        )
    out.append(
        _table(
            [
                "delta",
                "method",
                "‖Δ‖",
                "‖Δ‖/‖W‖",
                "exact zero",
                f"\\|Δ\\| ≤ {p.atol:g}",
                "bf16-unchanged",
                "updated (bf16)",
                "stable rank",
                "eff. rank / dim",
            ],
            rows,
        )
    )
    out.append("\nWhere each delta moves the weights most (top 3 groups):\n\n")
    out.append(
        _table(
            [
                "delta",
                "modules by energy share",
                "layer × module by energy share",
                "layer × module by ‖Δ‖/‖W‖",
            ],
            [
                [
                    label,
                    _tops(analysis, label, "module", "energy_share", True),
                    _tops(analysis, label, "layer_module", "energy_share", True),
                    _tops(analysis, label, "layer_module", "rel_norm", False),
                ]
                for label in analysis.deltas
            ],
        )
    )
    contrast = summ.get("contrast") or {}
    for key, c in contrast.items():
        a, b = c["a"], c["b"]
        base = analysis.deltas[a]["base"]
        out.append(
            f"\n### {a} vs {b}: head-to-head\n\n"
            f"Both are finetuned from `{base}`: τ_a = {a} − base, τ_b = {b} − base. Sparse "
            f"columns keep each tensor's top {ratio_pct} entries of each vector (random masks: "
            f"Jaccard {c['total'].get('mask_jaccard_random', math.nan):.3f}). `opposite signs` "
            "is the share of all entries where both vectors are non-zero with opposite signs "
            "(sign conflicts per parameter); `of both` divides by the entries both are "
            "non-zero at (kept by both, when sparse) instead.\n\n"
        )
        table_rows = [[f"**{key}**"] + [_f(c["total"].get(k), pct) for _, k, pct in _CONTRAST_COLS]]
        table_rows += [
            [m] + [_f(v.get(k), pct) for _, k, pct in _CONTRAST_COLS]
            for m, v in c["modules"].items()
        ]
        out.append(_table([""] + [h for h, _, _ in _CONTRAST_COLS], table_rows))
    contrast_pairs = [(c["a"], c["b"]) for c in contrast.values()]
    out.append(
        "\n### Published numbers beside ours\n\n"
        "Verdicts are computed from our numbers by the rule in each row (x = ours; bands "
        "include their ends and are tried in order). SFT-vs-RLVR rows use the contrasted "
        f"pairs ({', '.join(f'{a} vs {b}' for a, b in contrast_pairs) or 'none'}); "
        "per-method rows every delta whose method is dpo/rlvr (RL) or sft.\n\n"
    )
    by_key = {c.key: c for c in CLAIMS}
    rows = []
    for r in summ.get("claims", []):
        c = by_key[r["claim"]]
        subject = r["subject"]
        if subject is None:
            measured = f"{c.measured} ({_NO_SUBJECT[c.subjects]})"
        elif c.subjects == "contrast":
            ab = contrast[subject]
            a, b = ab["a"], ab["b"]
            measured = c.measured.replace("τ_a", f"τ_{a}").replace("τ_b", f"τ_{b}")
            measured += f", {a} vs {b}"
        else:
            measured = f"{c.measured}, {subject}"
        rows.append(
            [
                c.text,
                c.source,
                c.published,
                measured,
                c.format(r["value"]),
                c.rule(),
                f"**{r['verdict']}**",
            ]
        )
    out.append(
        _table(
            [
                "published claim",
                "source",
                "published",
                "measured here",
                "ours",
                "rule",
                "holds on these models?",
            ],
            rows,
        )
    )
    out.append("\nSources: " + "; ".join(f"{k}: {v}" for k, v in SOURCES.items()) + ".\n")
    return "".join(out)


def markdown(analysis: Analysis, summ: dict, figures: list[tuple[str, str]], title: str) -> str:
    """A readable report: inputs, totals, modules, pairs, resized vocabularies, figures."""
    p = analysis.params
    top_pct, ratio_pct = f"{100 * p.energy_top_fraction:g}%", f"{100 * p.top_ratio:g}%"
    header = [
        "",
        "params",
        "‖Δ‖/‖W‖",
        "RMS",
        "max abs",
        "zero",
        f"≤ {p.atol:g}",
        "bf16-unchanged",
        "energy share",
        f"top-{top_pct} energy",
        f"kept at {ratio_pct}",
        "stable rank",
        "eff. rank / dim",
    ]
    out = [f"# {title}\n", f"deltalab {__version__}. Definitions at the end.\n", "## Inputs\n"]
    out.append(
        _table(
            ["delta", "base", "finetuned"],
            [[k, f"`{v['base']}`", f"`{v['finetuned']}`"] for k, v in analysis.deltas.items()],
        )
    )
    if analysis.selected is not None:
        sel = analysis.selected
        pats = [f"--include `{x}`" for x in sel["include"]]
        pats += [f"--exclude `{x}`" for x in sel["exclude"]]
        out.append(f"\nSelected tensors: {sel['tensors']} of {sel['of']} ({', '.join(pats)}).\n")
    out.append("\n## Totals\n")
    out.append(_table(header, [_delta_row(k, v["total"]) for k, v in summ["deltas"].items()]))
    out.append(methods_markdown(analysis, summ))
    for label, d in summ["deltas"].items():
        out.append(f"\n## {label}: by module\n")
        out.append(_table(header, [_delta_row(m, v) for m, v in d["modules"].items()]))
        if d["resized"]:
            out.append("\nResized tensors (the shared rows are compared):\n")
            out.append(
                _table(
                    ["tensor", "base rows", "finetuned rows", "‖extra rows‖"],
                    [
                        [
                            f"`{t}`",
                            _f(int(r["rows_base"])),
                            _f(int(r["rows_finetuned"])),
                            _f(r["extra_rows_norm"]),
                        ]
                        for t, r in d["resized"].items()
                    ],
                )
            )
        if d["skipped_tensors"]:
            out.append(f"\nNon-float tensors skipped: {len(d['skipped_tensors'])}.\n")
    if summ["pairs"]:
        rho = p.top_ratio
        out.append(
            f"\n## Deltas of the same base\n\nSparse columns keep each tensor's top {ratio_pct} "
            f"entries of each delta; two independent masks would have Jaccard "
            f"{rho / (2 - rho):.3f}.\n\n"
        )
        ph = [
            "",
            "cosine",
            "sign agree",
            "‖a‖/‖b‖",
            "cosine (sparse)",
            "sign agree (sparse)",
            "‖a‖/‖b‖ (sparse)",
            "mask Jaccard",
        ]
        keys = [
            "cosine",
            "sign_agreement",
            "magnitude_ratio",
            "cosine_sparse",
            "sign_agreement_sparse",
            "magnitude_ratio_sparse",
            "mask_jaccard",
        ]
        rows = []
        for key, pr in summ["pairs"].items():
            rows.append([f"**{key}**"] + [_f(pr["total"].get(k)) for k in keys])
            rows += [[m] + [_f(v.get(k)) for k in keys] for m, v in pr["modules"].items()]
        out.append(_table(ph, rows))
    if figures:
        out.append("\n## Figures\n")
        for caption, name in figures:
            out.append(f"\n**{caption}**\n\n![{caption}]({name})\n")
    out.append("\n## Definitions\n")
    for k, v in DEFINITIONS.items():
        out.append(f"- `{k}`: {v}\n")
    out.append(
        "\nRanks of matrices with min(rows, cols) ≤ "
        f"{p.rank_exact_max_dim} that fit one chunk are exact; larger ones come from a "
        f"randomized SVD (top {p.rank_sketch_size} singular values, {p.rank_power_iters} power "
        "iteration(s)) with the remaining energy spread evenly over the other singular values.\n"
        "Per-tensor rows: `tensors.csv`; layer × module: `layers.csv`"
        + ("; pairs: `pairs.csv`, `pair_layers.csv`" if summ["pairs"] else "")
        + ".\n"
    )
    return "".join(out)
