"""Preference pairs `{prompt, chosen, rejected}`: reading them with checks, and the one
train/validation split that dpo, masked_dpo and the Fisher mask's calibration pairs share."""

from __future__ import annotations

import os
from collections.abc import Sequence

from deltalab.data.jsonl import read_jsonl
from deltalab.errors import DataError

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


def load_preference_rows(path: str | os.PathLike) -> list[dict]:
    """Preference pairs; a missing field, a non-string or an empty text is an error naming the
    file and row, and so is a pair whose chosen and rejected texts are the same."""
    rows = read_jsonl(path, PREFERENCE_FIELDS)
    for i, row in enumerate(rows):
        for key in PREFERENCE_FIELDS:
            if not isinstance(row[key], str) or not row[key].strip():
                raise DataError(f"{path}: row {i}: field {key!r} must be a non-empty string")
        if row["chosen"] == row["rejected"]:
            raise DataError(f"{path}: row {i}: chosen and rejected are identical")
    return rows


def preference_split(
    rows: Sequence[dict], val_fraction: float, max_train_samples: int | None = None
) -> tuple[list[dict], list[dict]]:
    """(train, validation) pairs: after the optional `max_train_samples` cut, the first
    `val_fraction` (at least one pair) is held out. dpo, masked_dpo and the Fisher mask's
    calibration pairs all use this split."""
    rows = list(rows[:max_train_samples] if max_train_samples else rows)
    n_val = max(1, int(len(rows) * val_fraction))
    return rows[n_val:], rows[:n_val]


def preference_pairs(
    path: str | os.PathLike, val_fraction: float, max_train_samples: int | None = None
) -> tuple[list[dict], list[dict]]:
    """The (train, validation) pairs of a DPO run: `load_preference_rows` + `preference_split`."""
    return preference_split(load_preference_rows(path), val_fraction, max_train_samples)
