"""Figures of a merge search: the objective space with its Pareto front, and the scale space."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from deltalab.report.figures import pyplot, save_figure


def plot_search(
    rows: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, Any],
    references: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    title: str,
) -> None:
    """Left: consistency vs perplexity (trials, Pareto front, chosen, reference points);
    right: the trials in (scale_sft, scale_rlvr), colored by consistency."""
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["perplexity"])
    ax.scatter(
        [r["perplexity"] for r in rows], [r["consistency"] for r in rows],
        s=14, c="0.7", label="trials",
    )  # fmt: skip
    ax.plot(
        [r["perplexity"] for r in front], [r["consistency"] for r in front],
        "o-", c="tab:red", ms=4, label="Pareto front",
    )  # fmt: skip
    for name, ref in references.items():
        ax.scatter(ref["perplexity"], ref["consistency"], marker="s", s=40, label=name)
    ax.scatter(
        chosen["perplexity"], chosen["consistency"], marker="*", s=220, c="gold",
        edgecolors="k", zorder=5, label="chosen",
    )  # fmt: skip
    ax.set_xlabel("prompt perplexity (lower is better)")
    ax.set_ylabel("answer consistency (higher is better)")
    ax.legend(fontsize=8)
    ax.set_title("objectives")
    sc = bx.scatter(
        [r["scale_sft"] for r in rows], [r["scale_rlvr"] for r in rows],
        c=[r["consistency"] for r in rows], cmap="viridis", s=18,
    )  # fmt: skip
    bx.scatter(
        chosen["scale_sft"], chosen["scale_rlvr"], marker="*", s=220, c="gold",
        edgecolors="k", zorder=5,
    )  # fmt: skip
    fig.colorbar(sc, ax=bx, label="consistency")
    bx.set_xlabel("scale_sft")
    bx.set_ylabel("scale_rlvr")
    bx.set_title("trials in scale space")
    fig.suptitle(title)
    save_figure(fig, path)
