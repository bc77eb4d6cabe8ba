"""Figures of every report: matplotlib on the Agg backend (no display needed, the same PNG
bytes on every machine) and one way to finish a figure: lay it out, write the PNG, close it."""

from __future__ import annotations

import os
from typing import Any

from deltalab.atomic import atomic_file


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend selected (imported on first use: the CLI and the
    stages that draw nothing never load matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig: Any, path: str | os.PathLike, *, dpi: int = 110, atomic: bool = False, **savefig: Any
) -> None:
    """`fig.tight_layout()`, then the PNG at `path` (through a temporary file renamed into
    place when `atomic`; `savefig`: more keywords of `Figure.savefig`), then close `fig`."""
    fig.tight_layout()
    if atomic:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, **savefig)
    else:
        fig.savefig(path, dpi=dpi, **savefig)
    pyplot().close(fig)
