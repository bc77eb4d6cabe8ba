"""Real datasets through `datasets.load_dataset` with a pinned revision.

`name` may be a hub id (`allenai/tulu-3-sft-mixture`, `openai/gsm8k`) or a local directory in the
same layout (how the tests exercise this code offline).
"""

from __future__ import annotations

from deltalab.data.params import HubDataset
from deltalab.errors import DataError


def load_hub_rows(spec: HubDataset, columns: tuple[str, ...]) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(spec.name, spec.config, revision=spec.revision, split=spec.split)
    except Exception as exc:  # datasets raises many types (offline, not found, bad revision)
        raise DataError(
            f"cannot load dataset {spec.name!r} (config={spec.config!r}, revision="
            f"{spec.revision!r}, split={spec.split!r}): {exc}"
        ) from exc
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(f"dataset {spec.name!r} has no column(s) {missing}; has {ds.column_names}")
    if spec.limit is not None:
        ds = ds.select(range(min(spec.limit, len(ds))))
    return [{c: row[c] for c in columns} | ({"id": row["id"]} if "id" in row else {}) for row in ds]
