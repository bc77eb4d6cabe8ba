"""JSONL files: one record per line, written atomically, read with errors that name the file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from deltalab.atomic import atomic_file
from deltalab.errors import DataError


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    count = 0
    with atomic_file(path) as tmp, tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(
    path: str | os.PathLike, required: Iterable[str] = (), *, allow_empty: bool = False
) -> list[dict]:
    """Read a JSONL file of objects; fail clearly on a missing file, bad JSON, missing fields or
    (unless `allow_empty`) no rows. Errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (run `dvc repro prepare_data`?)")
    rows = []
    keys = tuple(required)
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in keys if k not in row]
            if missing:
                raise DataError(f"{p}:{lineno}: missing field(s) {missing}")
            rows.append(row)
    if not rows and not allow_empty:
        raise DataError(f"{p}: no records")
    return rows
