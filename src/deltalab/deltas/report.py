"""Files of a delta analysis: summary JSON, per-tensor and per-layer CSVs, figures, report.md."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from deltalab import __version__
from deltalab.deltas.analysis import Analysis, DeltaSums, module_order
from deltalab.deltas.classify import MODULES
from deltalab.deltas.io import safe_name

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
    return _clean(
        {
            "deltalab_version": __version__,
            "params": analysis.params.model_dump(),
            "deltas": deltas,
            "pairs": pairs,
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
    return out


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
    out.append("\n## Totals\n")
    out.append(_table(header, [_delta_row(k, v["total"]) for k, v in summ["deltas"].items()]))
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
