"""Figures of a delta analysis (PNG): layer × module heatmaps, |Δ| histograms, methods compared."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from deltalab.deltas.classify import MODULES
from deltalab.report.figures import pyplot, save_figure
from deltalab.tensors.topk import log2_histogram

_GROUPS = {
    "embedding / lm_head": ("embedding", "lm_head"),
    "attention": ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o"),
    "MLP": ("mlp_gate", "mlp_up", "mlp_gate_up", "mlp_down", "router"),
    "norm": ("norm",),
    "other": ("other",),
}


def layer_module_grid(
    values: dict[tuple[int | None, str], float],
) -> tuple[np.ndarray, list[str], list[str]]:
    """A (rows, modules) array from {(layer, module): value}; row 0 holds the non-layer tensors."""
    modules = [m for m in MODULES if any(k[1] == m for k in values)]
    layers = sorted({k[0] for k in values if k[0] is not None})
    has_global = any(k[0] is None for k in values)
    row_keys: list[int | None] = ([None] if has_global else []) + list(layers)
    grid = np.full((len(row_keys), len(modules)), np.nan)
    for (layer, module), v in values.items():
        grid[row_keys.index(layer), modules.index(module)] = v
    row_names = ["emb/head/final" if k is None else str(k) for k in row_keys]
    return grid, row_names, modules


def heatmaps(
    panels: list[tuple[str, dict[tuple[int | None, str], float], bool]], title: str, path: Path
) -> None:
    """One PNG with a heatmap per panel (metric name, values, log colour scale)."""
    plt = pyplot()
    grids = [layer_module_grid(values) for _, values, _ in panels]
    n_rows = max(len(g[1]) for g in grids)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 1.8 + 0.22 * n_rows))
    axes = np.atleast_1d(axes)
    for ax, (metric, _, log), (grid, rows, cols) in zip(axes, panels, grids, strict=True):
        shown = grid.copy()
        if log:
            with np.errstate(divide="ignore", invalid="ignore"):
                shown = np.where(shown > 0, np.log10(shown), np.nan)
        im = ax.imshow(np.ma.masked_invalid(shown), aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_ylabel("layer")
        ax.set_title(f"log10 {metric}" if log else metric, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
        if grid.size <= 160:
            for (r, c), v in np.ndenumerate(grid):
                if not math.isnan(v):
                    light = im.norm(shown[r, c]) > 0.6  # dark text on the bright end of viridis
                    color = "k" if light else "w"
                    ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=6, color=color)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def histograms(hists: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """|Δ| distribution per delta (one panel each), one line per module group, log2 bins."""
    plt = pyplot()
    labels = list(hists)
    fig, axes = plt.subplots(len(labels), 1, figsize=(7, 2.6 * len(labels)), squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        total = sum(int(h.sum()) for h in hists[label].values())
        for group, modules in _GROUPS.items():
            hs = [hists[label][m] for m in modules if m in hists[label]]
            if not hs:
                continue
            h = np.sum(hs, axis=0)
            edges, counts = log2_histogram(h, per_octave=4)
            if not counts:
                continue
            zeros = int(h[: 1 << 8].sum())  # exponent 0: exact zeros (and denormals)
            ax.step(
                edges,
                np.asarray(counts) / max(total, 1),
                where="post",
                label=f"{group} (zero: {zeros / max(int(h.sum()), 1):.1%})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("|Δ|")
        ax.set_ylabel("share of entries")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def methods(deltas: dict[str, dict], path: Path) -> None:
    """Two panels comparing the deltas: unchanged shares (exact zero, |Δ| ≤ atol,
    bf16-unchanged) and the energy share of each module. `deltas`: label → {"method",
    "total": metrics, "modules": {module: energy share}}."""
    plt = pyplot()
    labels = list(deltas)
    names = [f"{k}\n({d['method']})" if d.get("method") else k for k, d in deltas.items()]
    modules = [m for m in MODULES if any(m in d["modules"] for d in deltas.values())]
    fig, axes = plt.subplots(
        1, 2, figsize=(5 + 0.9 * len(labels) + 0.5 * len(modules), 3.6), squeeze=False
    )
    ax = axes[0, 0]
    shares = [("exact zero", "frac_zero"), ("|Δ| ≤ atol", "frac_unchanged_atol")]
    shares.append(("bf16-unchanged", "frac_unchanged_bf16"))
    width = 0.8 / len(shares)
    x = np.arange(len(labels))
    for i, (name, key) in enumerate(shares):
        values = [deltas[k]["total"].get(key) for k in labels]
        ax.bar(x + (i - (len(shares) - 1) / 2) * width, _nan(values), width, label=name)
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of entries")
    ax.set_title("unchanged entries per delta", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(modules))
    for i, (label, name) in enumerate(zip(labels, names, strict=True)):
        values = [deltas[label]["modules"].get(m) for m in modules]
        offset = (i - (len(labels) - 1) / 2) * width
        ax.bar(x + offset, _nan(values), width, label=name.replace("\n", " "))
    ax.set_xticks(x, modules, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of ‖Δ‖²")
    ax.set_title("energy share per module", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _nan(values: list) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]
