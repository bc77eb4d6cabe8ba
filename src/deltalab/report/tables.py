"""Tables of every report: markdown tables, their number cells, and CSV files."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: header, separator, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table ending with a newline."""
    return "\n".join(table_lines(header, rows)) + "\n"


def cell(v: object, pct: bool = False) -> str:
    """A number for a markdown cell: "–" when missing or not finite, a percentage with one
    decimal when `pct`, else 3 significant digits (scientific below 1e-3 and from 1e4)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _csv_value(v: object, float_format: str) -> object:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, float_format)
    return v


def write_csv(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    *,
    float_format: str = ".6g",
    lineterminator: str = "\r\n",
) -> None:
    """`columns` of `rows` (other keys ignored); None and NaN are empty cells, floats are
    written with `float_format`. The default line end is the csv module's."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=columns, extrasaction="ignore", lineterminator=lineterminator
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k), float_format) for k in columns})
