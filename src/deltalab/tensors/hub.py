"""Resolving a checkpoint spec: a local directory, or a hub id fetched with huggingface_hub."""

from __future__ import annotations

import os
import re
from pathlib import Path

from deltalab.errors import CheckpointError
from deltalab.tensors.reader import Checkpoint

HUB_PATTERNS = [
    "*.safetensors",
    "*.json",
    "tokenizer*",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?$")


def _looks_like_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.match(spec)) and not spec.endswith(".safetensors")


def resolve_checkpoint(spec: str | os.PathLike) -> Checkpoint:
    """Open a local checkpoint directory or a hub id (`org/name` or `org/name@revision`).

    Hub ids are fetched with huggingface_hub (only safetensors, JSON and tokenizer files). Offline
    or unreachable, the error says what is missing and how to fetch it.
    """
    spec = str(spec)
    local = Path(spec).expanduser()
    if local.exists():
        return Checkpoint(local, source=spec)
    if not _looks_like_hub_id(spec):
        raise CheckpointError(f"{spec}: no such checkpoint directory")
    repo_id, _, revision = spec.partition("@")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise CheckpointError(f"{spec}: neither a local directory nor a valid hub id") from exc
    try:
        snapshot = Path(
            snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_PATTERNS)
        )
    except Exception as exc:  # offline, missing, gated, network: all one actionable message
        raise CheckpointError(
            f"{spec}: not a local directory, and fetching it from the Hugging Face Hub failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Needed: its *.safetensors, *.json and tokenizer files. Fetch them where the network "
            f"is available with `hf download {repo_id} --include '*.safetensors' '*.json' "
            "'tokenizer*'` into this machine's HF cache (or unset HF_HUB_OFFLINE), or pass a "
            "local directory."
        ) from exc
    return Checkpoint(snapshot, source=f"{repo_id}@{snapshot.name}")
