"""Numbers and a figure of how masks overlap."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from deltalab.report.figures import pyplot, save_figure


def summary(
    table: Mapping[str, Mapping[str, Any]],
    density: float,
    selection: str,
    densities: Mapping[str, float],
) -> dict[str, Any]:
    """Metrics without the per-tensor detail: pooled Jaccard, per-tensor mean/min/max, |A∩B|/|A|
    and the random expectation of every pair."""
    return {
        "density": density,
        "selection": selection,
        "kept": dict(densities),
        "jaccard": {
            pair: {
                "pooled": row["jaccard"],
                "per_tensor_mean": row["per_tensor_mean"],
                "per_tensor_min": row["per_tensor_min"],
                "per_tensor_max": row["per_tensor_max"],
                "a_in_b": row["a_in_b"],
                "random": row["random"],
            }
            for pair, row in table.items()
        },
    }


def plot_layers(
    table: Mapping[str, Mapping[str, Any]], reference: str, path: str | os.PathLike, title: str
) -> None:
    """Heatmaps (layer × module) of each mask's Jaccard with the reference mask."""
    import numpy as np

    plt = pyplot()

    rows = {p: r for p, r in table.items() if p.endswith(f"_vs_{reference}")}
    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(4.5 * max(1, len(rows)), 4))
    axes = np.atleast_1d(axes)
    for ax, (pair, row) in zip(axes, rows.items(), strict=False):
        cells: dict[tuple[str, str], list[float]] = {}
        for t in row["tensors"].values():
            cells.setdefault((t["layer"], t["module"]), []).append(t["jaccard"])
        layers = sorted({k[0] for k in cells}, key=lambda x: (x == "-", int(x) if x != "-" else 0))
        modules = sorted({k[1] for k in cells})
        grid = np.full((len(layers), len(modules)), np.nan)
        for (layer, module), values in cells.items():
            grid[layers.index(layer), modules.index(module)] = float(np.mean(values))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(modules)), modules, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), layers, fontsize=8)
        ax.set_title(f"{pair.replace('_vs_', ' vs ')}\n(random {row['random']:.3f})", fontsize=9)
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"Jaccard with the {reference} mask: {title}")
    save_figure(fig, path)
