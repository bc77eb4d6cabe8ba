"""The report directory of a delta analysis: summary.json, per-tensor and per-layer CSVs, PNG
figures and report.md, all written from one `Summary`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from deltalab.atomic import write_json
from deltalab.deltas import plots
from deltalab.deltas.accumulators import DeltaSums, PairSums
from deltalab.deltas.analysis import Analysis
from deltalab.deltas.classify import MODULES
from deltalab.deltas.markdown import PATTERN_NAMES, markdown
from deltalab.deltas.summary import PAIR_KEYS_SMALL, Summary, summarize, summary_json
from deltalab.paths import safe_name
from deltalab.report.tables import write_csv

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


def _lm_sort(kv: tuple) -> tuple:
    (layer, module), _ = kv
    return (layer is not None, layer or 0, MODULES.index(module))


def _write_csvs(s: Summary, out_dir: Path) -> None:
    write_csv(out_dir / "tensors.csv", s.tensors, _TENSOR_COLS)
    layer_rows = [
        {"delta": label, "layer": layer, "module": module} | m
        for label, d in s.deltas.items()
        for (layer, module), m in sorted(d.by_layer_module.items(), key=_lm_sort)
    ]
    layer_cols = ["delta", "layer", "module", *DeltaSums().metrics(1.0)]
    write_csv(out_dir / "layers.csv", layer_rows, layer_cols)
    if s.pairs:
        pair_cols = ["pair", "tensor", "layer", "module", *PairSums().metrics()]
        write_csv(out_dir / "pairs.csv", s.analysis.pair_tensors, pair_cols)
        pair_rows = [
            {"pair": key, "layer": layer, "module": module} | m
            for key, p in s.pairs.items()
            for (layer, module), m in p.by_layer_module.items()
        ]
        write_csv(out_dir / "pair_layers.csv", pair_rows, [c for c in pair_cols if c != "tensor"])


def _draw_figures(s: Summary, out_dir: Path) -> list[tuple[str, str]]:
    """Every figure into `out_dir`; (caption, file name) of each, in report order."""
    figures: list[tuple[str, str]] = []
    for label, d in s.deltas.items():
        values = d.by_layer_module
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
    for key, p in s.pairs.items():
        values = p.by_layer_module
        name = f"heatmap_{safe_name(key)}.png"
        panels = [
            (metric, {k: v[metric] for k, v in values.items()}, False) for metric in PAIR_KEYS_SMALL
        ]
        plots.heatmaps(panels, f"{key}: layer × module", out_dir / name)
        figures.append((f"{key}: layer × module", name))
    if s.deltas:
        plots.methods(
            {
                label: {
                    "method": d.method,
                    "total": d.total,
                    "modules": {m: v["energy_share"] for m, v in d.modules.items()},
                }
                for label, d in s.deltas.items()
            },
            out_dir / "methods.png",
        )
        figures.append(("Methods: unchanged shares and where the energy goes", "methods.png"))
    hists: dict[str, dict] = {}
    for (label, module), h in s.analysis.histograms.items():
        hists.setdefault(label, {})[module] = h
    if hists:
        plots.histograms(hists, out_dir / "hist_abs_delta.png")
        figures.append(("|Δ| distribution", "hist_abs_delta.png"))
    return figures


def write_report(
    analysis: Analysis,
    out_dir: str | Path,
    title: str = "Weight deltas",
    *,
    pattern_names: Mapping[str, str] = PATTERN_NAMES,
) -> None:
    """Write summary.json, CSVs, PNG figures and report.md into `out_dir`.

    `pattern_names`: how report.md names the include/exclude patterns of a tensor selection."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = summarize(analysis)
    write_json(out_dir / "summary.json", summary_json(s))
    _write_csvs(s, out_dir)
    figures = _draw_figures(s, out_dir)
    (out_dir / "report.md").write_text(markdown(s, figures, title, pattern_names))
