"""What a base and the fine-tunes of one task-vector triple must share, read from config.json.

A task vector is a difference of weights: the two checkpoints must be one architecture (model
type, depth, widths, heads). Settings that change how the same weights are used, not their shape
(`rope_theta`, `max_position_embeddings`, as some Qwen2.5-Math SFT releases change them against
their base), are reported: the merge keeps the base's config and says so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from deltalab.errors import CheckpointError

# Same architecture: every key either config names (GPT-2 spelling, then Llama/Qwen/Gemma's).
SHAPE_KEYS = (
    ("model_type",),
    ("architectures",),
    ("n_layer", "num_hidden_layers"),
    ("n_embd", "hidden_size"),
    ("n_head", "num_attention_heads"),
    ("num_key_value_heads",),
    ("n_inner", "intermediate_size"),
    ("head_dim",),
)
USE_KEYS = ("rope_theta", "max_position_embeddings", "n_positions", "sliding_window")


def _config(path: Path) -> dict | None:
    file = path / "config.json"
    if not file.is_file():
        return None  # a bare tensor file: shapes are checked tensor by tensor
    try:
        return json.loads(file.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc


def _value(config: dict, names: tuple[str, ...]) -> object:
    text = config.get("text_config") or {}  # multimodal wrappers keep the LM's numbers inside
    return next((config.get(n, text.get(n)) for n in names if n in config or n in text), None)


def check_same_architecture(base: Path, finetuned: Sequence[Path]) -> list[str]:
    """Raise naming both directories and the key when a fine-tune is another architecture;
    return (and print) one line per use setting that differs from the base's."""
    base_config = _config(base)
    notes: list[str] = []
    if base_config is None:
        return notes
    for path in finetuned:
        config = _config(path)
        if config is None:
            continue
        for names in SHAPE_KEYS:
            a, b = _value(base_config, names), _value(config, names)
            if a != b:
                raise CheckpointError(
                    f"{path}: mismatched architectures: {names[-1]} is {b!r} but the base "
                    f"{base} has {a!r} (a task vector needs one architecture)"
                )
        for key in USE_KEYS:
            a, b = base_config.get(key), config.get(key)
            if a != b:
                notes.append(
                    f"{path}: {key} {b!r} differs from the base's {a!r}; a merge keeps the base's"
                )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return notes
