"""The helpers every report shares: markdown tables and cells, CSV files, saved figures."""

from __future__ import annotations

import math

from deltalab.report.figures import pyplot, save_figure
from deltalab.report.tables import cell, markdown_table, table_lines, write_csv


def test_markdown_table():
    assert table_lines(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    assert markdown_table(["a"], []) == "| a |\n|---|\n"


def test_cells():
    assert [cell(None), cell(math.nan), cell(math.inf)] == ["–", "–", "–"]
    assert (cell(0.25, True), cell(12), cell(0.0), cell(0.12345)) == ("25.0%", "12", "0", "0.123")
    assert (cell(1e-4), cell(12345.0)) == ("1.00e-04", "1.23e+04")


def test_write_csv(tmp_path):
    rows = [{"a": 1.0 / 3, "b": None, "c": "x", "extra": 1}, {"a": math.nan, "b": 2, "c": "y"}]
    write_csv(tmp_path / "t.csv", rows, ["a", "b", "c"])
    assert (tmp_path / "t.csv").read_bytes() == b"a,b,c\r\n0.333333,,x\r\n,2,y\r\n"
    write_csv(tmp_path / "u.csv", rows[:1], ["c", "a"], float_format=".4f", lineterminator="\n")
    assert (tmp_path / "u.csv").read_text() == "c,a\nx,0.3333\n"


def test_save_figure_writes_a_png_and_closes_it(tmp_path):
    plt = pyplot()
    for path, atomic in ((tmp_path / "a.png", False), (tmp_path / "sub" / "b", True)):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        save_figure(fig, path, atomic=atomic)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not plt.fignum_exists(fig.number)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["b"]  # no temporary file left
