"""Outputs of the behavior stage: pass@k curves (PNG + CSV for `dvc plots`), per-question samples
(JSONL) and a short markdown table. Every file is written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deltalab.atomic import atomic_dir, atomic_file, write_json
from deltalab.report.figures import pyplot, save_figure
from deltalab.report.tables import table_lines, write_csv


def _ks(block: Mapping[str, float]) -> list[int]:
    return sorted(int(key[1:]) for key in block)


def passk_rows(metrics: Mapping[str, Any], models: Sequence[str]) -> list[tuple[str, int, float]]:
    """(model, k, pass@k) for every model and k, in model order then k order."""
    return [
        (model, k, metrics["models"][model]["pass_at_k"][f"k{k}"])
        for model in models
        for k in _ks(metrics["models"][model]["pass_at_k"])
    ]


def write_passk_csv(
    path: str | os.PathLike, metrics: Mapping[str, Any], models: Sequence[str]
) -> None:
    """`model,k,pass_at_k` rows for a dvc.yaml plot (x: k, y: pass_at_k, one line per model)."""
    rows = [
        {"model": model, "k": k, "pass_at_k": value}
        for model, k, value in passk_rows(metrics, models)
    ]
    with atomic_file(path) as tmp:
        write_csv(tmp, rows, ["model", "k", "pass_at_k"], float_format=".4f", lineterminator="\n")


def plot_pass_at_k(
    metrics: Mapping[str, Any], models: Sequence[str], out: str | os.PathLike, title: str
) -> None:
    """pass@k against k (log2 axis), one line per model; greedy accuracy: hollow marker at k=1."""
    fig, ax = pyplot().subplots(figsize=(6.5, 4.2))
    for i, model in enumerate(models):
        block = metrics["models"][model]["pass_at_k"]
        ks = _ks(block)
        color = f"C{i}"
        ax.plot(ks, [block[f"k{k}"] for k in ks], marker="o", color=color, label=model)
        ax.plot(
            [1],
            [metrics["models"][model]["greedy"]["accuracy"]],
            marker="D",
            mfc="none",
            color=color,
            ms=8,
        )
    ax.set_xscale("log", base=2)
    ks = _ks(metrics["models"][models[0]]["pass_at_k"])
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="k (samples)", ylabel="pass@k", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(title="◇ greedy accuracy", fontsize=8)
    save_figure(fig, out, atomic=True, metadata={"Software": None})


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(block: Mapping[str, float]) -> str:
    low, high = block["questions_ci_low"], block["questions_ci_high"]
    return f"{block['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _model_row(model: str, m: Mapping[str, Any], n: int) -> list[str]:
    return [
        model,
        f"{m['greedy']['accuracy']:.3f}",
        f"{m['pass_at_k']['k1']:.3f}",
        f"{m['pass_at_k'][f'k{n}']:.3f}",
        f"{m['confidence']['majority_accuracy']:.3f}",
        f"{m['diversity']['distinct_answers']:.2f}",
        _fmt(m["diversity"]["distinct_2"]),
        f"{m['confidence']['mean_logprob']:.3f}",
        f"{m['confidence']['mean_entropy']:.3f}",
        f"{m['confidence']['majority_share']:.3f}",
        f"{m['length']['greedy_tokens']:.1f} / {m['length']['sample_tokens']:.1f}",
        f"{m['length']['greedy_stop_rate']:.2f}",
    ]


def behavior_markdown(metrics: Mapping[str, Any], models: Sequence[str], title: str) -> str:
    """Per-model table and per-comparison table (differences with their intervals)."""
    n, q = metrics["samples"], metrics["questions"]
    header = [
        "model",
        "greedy",
        "pass@1",
        f"pass@{n}",
        "majority vote",
        "distinct answers",
        "distinct-2",
        "log-prob",
        "entropy",
        "majority share",
        "tokens (greedy / sampled)",
        "stop rate",
    ]
    rows = [_model_row(model, metrics["models"][model], n) for model in models]
    lines = [f"# Behavior: {title}", "", f"{q} GSM8K test questions, greedy and {n} samples each."]
    lines += ["", *table_lines(header, rows)]
    comparisons = metrics["comparisons"]
    if comparisons:
        header = [
            "treatment vs reference",
            "greedy diff [CI], McNemar p",
            "pass@1 diff [CI]",
            f"pass@{n} diff [CI]",
        ]
        rows = [
            [
                name.replace("_vs_", " vs "),
                f"{_interval(c['greedy'])}, p = {c['greedy']['mcnemar_p']:.3g}",
                _interval(c["pass_at_k"]["k1"]),
                _interval(c["pass_at_k"][f"k{n}"]),
            ]
            for name, c in comparisons.items()
        ]
        lines += ["", *table_lines(header, rows)]
        lines += ["", f"Intervals: {next(iter(comparisons.values()))['interval']}."]
    return "\n".join(lines) + "\n"


def write_behavior(
    metrics: Mapping[str, Any],
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    models: Sequence[str],
    *,
    metrics_path: str | os.PathLike,
    plot_csv: str | os.PathLike,
    report_dir: str | os.PathLike,
    title: str,
) -> None:
    """The report directory (samples.jsonl, passk.png, report.md), the CSV, then the metrics."""
    with atomic_dir(report_dir) as tmp:
        with (Path(tmp) / "samples.jsonl").open("w", encoding="utf-8") as f:
            for model in models:
                for record in records[model]:
                    f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        plot_pass_at_k(metrics, models, Path(tmp) / "passk.png", title)
        (Path(tmp) / "report.md").write_text(behavior_markdown(metrics, models, title))
    write_passk_csv(plot_csv, metrics, models)
    write_json(metrics_path, metrics)
