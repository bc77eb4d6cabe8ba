"""Imported checkpoints: fetched from the hub at a pinned commit (or a local directory), recorded
by a small manifest, and verified against it by every reader.

An 8B progression is 64 GB, so an import is referenced, not copied: its stage output is a
directory holding `import.json` (source id, revision, each file's name, size and sha256). Readers
call `resolve`, which finds the files (the Hugging Face cache, fetched again at the pinned
revision when missing, or the local source) and checks every size and hash, so a changed file
is an error naming it rather than a silently different study. With `store: copy` the files are
copied into the stage output as well (DVC caches and pushes them) and are read from there.
`.bin`-only repositories are loaded with `torch.load(weights_only=True)` and converted to
safetensors shards in the stage output: the streaming readers need safetensors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path

from deltalab.errors import CheckpointError

MANIFEST = "import.json"
SAFETENSORS = ["*.safetensors", "model.safetensors.index.json"]
BIN = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
# Everything a causal LM needs besides its weights: config, generation config, tokenizer files.
META = [
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "*.model",
    "*.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
]
_CHUNK = 8 * 2**20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(root: Path, names: Iterable[str]) -> list[dict]:
    """name, size and sha256 of each file under `root`, sorted by name."""
    return [
        {"name": n, "size": (root / n).stat().st_size, "sha256": sha256_file(root / n)}
        for n in sorted(names)
    ]


def _matching(root: Path, patterns: list[str]) -> list[str]:
    """The top-level files of `root` a checkpoint consists of (not a local training directory's
    optimizer state or `checkpoint-*/` folders)."""
    return sorted(
        p.name for p in root.iterdir() if p.is_file() and any(fnmatch(p.name, x) for x in patterns)
    )


def _copy(root: Path, out: Path, names: list[str]) -> None:
    for name in names:
        shutil.copy2(root / name, out / name)


def _hub_error(repo_id: str, revision: str, exc: Exception) -> CheckpointError:
    """One actionable line per way the hub can refuse; never the token."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return CheckpointError(
            f"{repo_id}: a gated repository: accept its terms on https://huggingface.co/{repo_id} "
            "and set HF_TOKEN to a token of that account (or run `hf auth login`), then re-run"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return CheckpointError(f"{repo_id}: revision {revision} does not exist in the repository")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return CheckpointError(
            f"{repo_id}: repository not found (private or gated ones need HF_TOKEN set)"
        )
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        return CheckpointError(
            f"{repo_id}@{revision}: not in this machine's Hugging Face cache and the hub cannot "
            "be reached (HF_HUB_OFFLINE set, or no network): fetch it where the network is "
            f"available with `hf download {repo_id} --revision {revision}`"
        )
    first = str(exc).splitlines()[0] if str(exc) else ""
    return CheckpointError(f"{repo_id}@{revision}: fetching failed ({type(exc).__name__}: {first})")


def _download(repo_id: str, revision: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # one message per kind of failure
        raise _hub_error(repo_id, revision, exc) from exc


def fetch(source_id: str, revision: str | None) -> Path:
    """The directory holding a source's files: the local path, or the hub snapshot of `revision`
    (safetensors preferred; `.bin` weights fetched only when there are none)."""
    if revision is None:
        root = Path(source_id).expanduser()
        if not root.is_dir():
            raise CheckpointError(f"{source_id}: checkpoint directory not found")
        return root
    root = _download(repo_id=source_id, revision=revision, patterns=META + SAFETENSORS)
    if not any(root.glob("*.safetensors")):
        root = _download(source_id, revision, META + BIN)
    return root


def weight_format(root: Path) -> str:
    if any(root.glob("*.safetensors")):
        return "safetensors"
    if any(root.glob("pytorch_model*.bin")):
        return "bin"
    raise CheckpointError(f"{root}: no weights (*.safetensors or pytorch_model*.bin)")


def check_importable(root: Path, name: str, trust_remote_code: bool) -> dict:
    """The source's config.json, after checking it is a causal LM transformers can build."""
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{name}: no config.json: not a Hugging Face checkpoint")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{name}: config.json is not valid JSON ({exc})") from exc
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING and not trust_remote_code:
        needs = "its own code (auto_map)" if config.get("auto_map") else "an unknown model_type"
        raise CheckpointError(
            f"{name}: model_type {config.get('model_type')!r} needs {needs}, and "
            "runtime.trust_remote_code is off: set it in the profile only if you trust the "
            "repository's code"
        )
    if not any((root / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise CheckpointError(f"{name}: no tokenizer files (tokenizer.json, tokenizer.model, ...)")
    weight_format(root)
    return config


def convert_bin(root: Path, out: Path) -> list[str]:
    """`.bin` shards → safetensors shards in `out` (one shard in memory at a time, loaded with
    weights_only=True), with an index when there are several. Returns the files written."""
    import torch
    from safetensors.torch import save_file

    shards = sorted(p.name for p in root.glob("pytorch_model*.bin"))
    weight_map, written = {}, []
    for i, shard in enumerate(shards, 1):
        state = torch.load(root / shard, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(state, dict):
            raise CheckpointError(f"{root / shard}: not a state dict")
        target = "model.safetensors" if len(shards) == 1 else (
            f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        )  # fmt: skip
        # safetensors refuses shared storage (tied weights): each tensor gets its own copy
        save_file({k: v.contiguous().clone() for k, v in state.items()}, out / target,
                  metadata={"format": "pt"})  # fmt: skip
        weight_map |= dict.fromkeys(state, target)
        written.append(target)
        del state
    if len(shards) > 1:
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2, sort_keys=True)
        )
        written.append("model.safetensors.index.json")
    return written


def import_checkpoint(
    source_id: str,
    revision: str | None,
    out: Path,
    *,
    store: str = "reference",
    trust_remote_code: bool = False,
) -> dict:
    """Write the import of a checkpoint into the (empty) directory `out`; returns the manifest."""
    root = fetch(source_id, revision)
    name = f"{source_id}@{revision}" if revision else source_id
    check_importable(root, name, trust_remote_code)
    fmt = weight_format(root)
    files = _matching(root, META + (SAFETENSORS if fmt == "safetensors" else BIN))
    manifest = {
        "id": source_id,
        "revision": revision,
        "format": fmt,
        "files": describe(root, files),
        "store": store,
    }
    if fmt == "bin":  # converted: read from the stage output
        meta = _matching(root, META)
        _copy(root, out, meta)
        manifest["stored"] = describe(out, meta + convert_bin(root, out))
    elif store == "copy":
        _copy(root, out, files)
        manifest["stored"] = describe(out, files)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest["id"], str) or not isinstance(manifest["files"], list):
            raise TypeError("id or files missing")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not an import manifest ({exc})") from exc
    return manifest


def verify(root: Path, files: list[dict], what: str) -> None:
    """Every listed file exists under `root` with its recorded size and sha256."""
    for entry in files:
        path = root / entry["name"]
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {what} but missing")
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise CheckpointError(
                f"{path}: changed since it was imported (size or sha256 differs from {what}); "
                "re-run the import stage if the change is intended"
            )


def resolve(directory: str | Path) -> Path:
    """The directory to read a checkpoint from: itself when it is not an import, else where the
    imported files are, after verifying every one of them against the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        return directory
    what = str(directory / MANIFEST)
    if "stored" in manifest:
        verify(directory, manifest["stored"], what)
        return directory
    names = [f["name"] for f in manifest["files"]]
    root = (
        fetch(manifest["id"], None)
        if manifest["revision"] is None
        else _download(manifest["id"], manifest["revision"], names)
    )
    verify(root, manifest["files"], what)
    return root
