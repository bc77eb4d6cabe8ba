"""Accuracy tables and figures of the evaluate/compare stages (dvc plots data + PNG images)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from deltalab.atomic import atomic_file
from deltalab.report.figures import pyplot, save_figure

FAMILIES = ("times_table", "two_by_one", "addition")


def accuracy_table(metrics: Mapping[tuple[str, int, str], Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (condition, seed, model): GSM8K accuracy, stop rate and probe accuracies."""
    rows = []
    for (cond, seed, model), m in metrics.items():
        row = {
            "condition": cond,
            "seed": seed,
            "model": model,
            "gsm8k_accuracy": m["gsm8k"]["accuracy"],
            "stop_rate": m["gsm8k"]["stop_rate"],
        }
        probes = m.get("probes") or {}
        if probes:
            row["probes_accuracy"] = probes["accuracy"]
            row.update({f"{f}_accuracy": probes[f]["accuracy"] for f in FAMILIES if f in probes})
        rows.append(row)
    return pd.DataFrame(rows)


def write_plot_data(table: pd.DataFrame, out_dir: Path, models: list[str]) -> None:
    """Long-format CSVs for `dvc plots`: one bar per (model, condition), mean over seeds."""
    mean = table.groupby(["model", "condition"], sort=False).mean(numeric_only=True).reset_index()
    mean["order"] = mean["model"].map({m: i for i, m in enumerate(models)})
    mean = mean.sort_values(["order", "condition"]).drop(columns=["order", "seed"])
    mean["label"] = mean["model"] + " · " + mean["condition"]
    with atomic_file(out_dir / "accuracy.csv") as tmp:
        mean.to_csv(tmp, index=False, float_format="%.4f")
    probes = [
        {
            "label": f"{r.model} · {r.condition} · {family}",
            "model": r.model,
            "condition": r.condition,
            "family": family,
            "accuracy": getattr(r, f"{family}_accuracy"),
        }
        for r in mean.itertuples()
        for family in FAMILIES
        if f"{family}_accuracy" in mean
    ]
    with atomic_file(out_dir / "probes.csv") as tmp:
        pd.DataFrame(probes).to_csv(tmp, index=False, float_format="%.4f")


def plot_accuracy(
    table: pd.DataFrame, models: list[str], out: Path, branches: Sequence[str] = ()
) -> None:
    """Two panels: GSM8K accuracy along the stage sequence `models`, with `branches` (models
    trained off that sequence, e.g. rlvr, dpo) as unconnected markers where a condition has them;
    and probe accuracy per family of the last of `models`."""
    mean = table.groupby(["model", "condition"]).mean(numeric_only=True)
    conditions = sorted(table["condition"].unique())
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4))
    stages = [*models, *branches]
    for cond in conditions:
        ys = [
            mean.loc[(m, cond), "gsm8k_accuracy"] if (m, cond) in mean.index else float("nan")
            for m in stages
        ]
        (line,) = left.plot(models, ys[: len(models)], marker="o", label=cond)
        left.plot(stages[len(models) :], ys[len(models) :], "D", color=line.get_color())
    left.tick_params(axis="x", labelrotation=20)
    final = models[-1]
    title = "GSM8K accuracy by stage" + (" (◆ trained off it)" if branches else "")
    left.set(title=title, ylabel="accuracy", ylim=(0, 1))
    left.legend()
    width = 0.8 / max(1, len(conditions))
    for i, cond in enumerate(conditions):
        ys = [
            mean.loc[(final, cond), f"{f}_accuracy"] if f"{f}_accuracy" in mean else 0
            for f in FAMILIES
        ]
        right.bar([x + i * width for x in range(len(FAMILIES))], ys, width, label=cond)
    right.set_xticks(
        [x + width * (len(conditions) - 1) / 2 for x in range(len(FAMILIES))], FAMILIES
    )
    right.set(title=f"Arithmetic probes after {final}", ylim=(0, 1))
    right.legend()
    save_figure(fig, out, dpi=120, atomic=True)
