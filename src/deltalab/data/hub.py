"""Real datasets at a pinned revision: the repository snapshot is fetched with huggingface_hub
(from the local cache when offline) and read with `datasets.load_dataset` from that directory.

`name` may also be a local directory in the same layout. Every loader checks the columns it
needs and names the dataset and the missing column.
"""

from __future__ import annotations

from pathlib import Path

from deltalab.data.params import HubDataset
from deltalab.errors import DataError
from deltalab.schema.pinning import is_local_source


def snapshot(spec: HubDataset) -> Path:
    """The directory of the dataset's files at its pinned revision."""
    local = Path(spec.name).expanduser()
    if is_local_source(spec.name) or local.is_dir():
        if not local.is_dir():
            raise DataError(f"dataset {spec.name!r}: no such directory")
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.name, repo_type="dataset", revision=spec.revision))
    except Exception as exc:  # gated, offline, not found: one line naming the dataset
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot fetch dataset {spec.name!r} at revision {spec.revision!r} ({first}); gated "
            "datasets need HF_TOKEN, offline machines a cached snapshot "
            f"(`hf download {spec.name} --repo-type dataset --revision {spec.revision}`)"
        ) from exc


def load_hub_rows(spec: HubDataset, columns: tuple[str, ...]) -> list[dict]:
    """Rows of one split with our `columns` (renamed from the dataset's by `spec.columns`)."""
    import datasets

    root = snapshot(spec)
    try:
        ds = datasets.load_dataset(str(root), spec.config, split=spec.split)
    except Exception as exc:  # datasets raises many types (bad config, split, layout)
        raise DataError(
            f"cannot load dataset {spec.name!r} (config={spec.config!r}, revision="
            f"{spec.revision!r}, split={spec.split!r}): {exc}"
        ) from exc
    theirs = {ours: (spec.columns or {}).get(ours, ours) for ours in columns}
    missing = [f"{c!r}" + (f" (as {theirs[c]!r})" if theirs[c] != c else "")
               for c in columns if theirs[c] not in ds.column_names]  # fmt: skip
    if missing:
        raise DataError(
            f"dataset {spec.name!r} ({spec.split}) has no column {', '.join(missing)}; "
            f"it has {ds.column_names}"
        )
    if spec.limit is not None:
        ds = ds.select(range(min(spec.limit, len(ds))))
    return [
        {c: row[theirs[c]] for c in columns} | ({"id": row["id"]} if "id" in row else {})
        for row in ds
    ]


def preference_rows_from_messages(spec: HubDataset) -> list[dict]:
    """`{prompt, chosen, rejected}` from message-list pairs (`trl-lib/ultrafeedback_binarized`,
    `allenai/llama-3.1-tulu-3-8b-preference-mixture`): the prompt is the one user turn both
    conversations share, the responses their final assistant turns. Pairs with several turns,
    equal responses or empty texts are dropped; a malformed row is an error naming it."""
    rows = load_hub_rows(spec, ("chosen", "rejected"))
    pairs = []
    for i, row in enumerate(rows):
        chosen, rejected = row["chosen"], row["rejected"]
        for key, conv in (("chosen", chosen), ("rejected", rejected)):
            if not (isinstance(conv, list) and conv and all(
                isinstance(m, dict) and {"role", "content"} <= set(m) for m in conv
            )):  # fmt: skip
                raise DataError(
                    f"dataset {spec.name!r}: row {i}: {key!r} is not a list of "
                    "{role, content} messages"
                )
        if (
            len(chosen) != 2 or len(rejected) != 2 or chosen[0] != rejected[0]
            or chosen[0]["role"] != "user" or chosen[1]["role"] != "assistant"
        ):  # fmt: skip
            continue  # multi-turn or system-prompted pairs: the prompt is not one question
        prompt, good, bad = chosen[0]["content"], chosen[1]["content"], rejected[1]["content"]
        if prompt.strip() and good.strip() and bad.strip() and good != bad:
            pairs.append({"id": row.get("id", f"prefs-{i:07d}"), "prompt": prompt,
                          "chosen": good, "rejected": bad})  # fmt: skip
    if not pairs:
        raise DataError(f"dataset {spec.name!r}: no single-turn preference pairs")
    return pairs
