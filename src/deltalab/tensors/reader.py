"""Streaming reads of safetensors checkpoints (single or sharded) in bounded memory.


Reading parses the safetensors header ourselves and copies byte ranges with `pread` into fresh
buffers instead of memory-mapping the file: mapped pages count towards the resident set until the
file is closed, so an mmap reader of a 5 GB shard grows by 5 GB; ours holds only what it asked for.
Any element range of a tensor can be read, which lets callers process huge tensors (a 128k × 4k
embedding) in row chunks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from deltalab.errors import CheckpointError
from deltalab.tensors.format import (
    DTYPES,
    INDEX_NAME,
    SINGLE_NAME,
    TensorInfo,
    itemsize,
    read_header,
)
from deltalab.tensors.imports import read_manifest, resolve

# Names a tied output embedding may be stored under (GPT-2, Llama/Qwen/Mistral/Gemma, NeoX, OPT).
_EMBEDDING_NAMES = (
    "model.embed_tokens.weight",
    "transformer.wte.weight",
    "wte.weight",
    "model.decoder.embed_tokens.weight",
    "gpt_neox.embed_in.weight",
    "embed_tokens.weight",
)


class Buffer:
    """A growable byte buffer reused across reads and conversions of the same size class."""

    def __init__(self) -> None:
        self._t = torch.empty(0, dtype=torch.uint8)

    def get(self, nbytes: int) -> torch.Tensor:
        if self._t.numel() < nbytes:
            self._t = torch.empty(nbytes, dtype=torch.uint8)
        return self._t[:nbytes]


def _pread_exact(fd: int, buf: memoryview, offset: int, path: Path, name: str) -> None:
    done = 0
    while done < len(buf):  # Linux caps one read at ~2 GiB
        got = os.preadv(fd, [buf[done:]], offset + done)
        if got <= 0:
            raise CheckpointError(f"{path}: tensor {name!r}: unexpected end of file (truncated?)")
        done += got


class SafetensorsReader:
    """A set of safetensors files read one tensor, or one element range of a tensor, at a time."""

    def __init__(self, tensors: dict[str, TensorInfo]) -> None:
        self.tensors = tensors
        self._fds: dict[Path, int] = {}

    def read(
        self, name: str, start: int = 0, stop: int | None = None, out: Buffer | None = None
    ) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor, in its stored dtype: a fresh copy, or
        a view of `out`'s memory (reused buffers spare the page faults of fresh memory)."""
        info = self.tensors[name]
        stop = info.numel if stop is None else stop
        if not 0 <= start <= stop <= info.numel:
            raise ValueError(f"range [{start}, {stop}) outside tensor {name} of {info.numel}")
        size = itemsize(info.dtype)
        nbytes = (stop - start) * size
        buf = torch.empty(nbytes, dtype=torch.uint8) if out is None else out.get(nbytes)
        if buf.numel():
            fd = self._fds.get(info.path)
            if fd is None:
                try:
                    fd = self._fds[info.path] = os.open(info.path, os.O_RDONLY)
                except OSError as exc:
                    raise CheckpointError(f"{info.path}: cannot open ({exc.strerror})") from exc
            mv = memoryview(buf.numpy()).cast("B")
            _pread_exact(fd, mv, info.offset + start * size, info.path, name)
        return buf.view(DTYPES[info.dtype])

    def read_f32(
        self,
        name: str,
        start: int = 0,
        stop: int | None = None,
        out: Buffer | None = None,
        scratch: Buffer | None = None,
    ) -> torch.Tensor:
        """Like `read`, converted to fp32 (into `out` when given; `scratch` holds the raw bytes)."""
        if out is None:
            raw = self.read(name, start, stop)
            return raw if raw.dtype == torch.float32 else raw.float()
        if self.tensors[self._key(name)].dtype == "F32":
            return self.read(name, start, stop, out)
        raw = self.read(name, start, stop, scratch)
        return out.get(raw.numel() * 4).view(torch.float32).copy_(raw)

    def _key(self, name: str) -> str:
        return name

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    _os_close = staticmethod(os.close)  # still bound while modules are torn down at exit

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            self._os_close(fd)


class Checkpoint(SafetensorsReader):
    """A Hugging Face checkpoint directory (single or sharded safetensors) opened for streaming.

    `names` lists the stored tensors in file order (sequential reads). Tied weights that are not
    stored (GPT-2's `lm_head.weight`) resolve to the embedding through `resolve`.
    """

    def __init__(self, path: str | os.PathLike, source: str | None = None) -> None:
        manifest = read_manifest(path) if Path(path).is_dir() else None
        if manifest is not None:  # an imported checkpoint: its verified files, named by origin
            rev = f"@{manifest['revision'][:12]}" if manifest["revision"] else ""
            source = source or f"{path} ({manifest['id']}{rev})"
            path = resolve(path)
        self.path = Path(path)
        self.source = source or str(path)
        files, tensors = _open_checkpoint(self.path)
        super().__init__(tensors)
        self.files = files
        self.config: dict = {}
        config_path = self.path / "config.json" if self.path.is_dir() else None
        if config_path is not None and config_path.is_file():
            try:
                self.config = json.loads(config_path.read_text())
            except ValueError as exc:
                raise CheckpointError(f"{config_path}: invalid JSON ({exc})") from exc
        self.aliases: dict[str, str] = {}
        if "lm_head.weight" not in tensors and self.config.get("tie_word_embeddings", True):
            emb = next((n for n in _EMBEDDING_NAMES if n in tensors), None)
            if emb is not None:
                self.aliases["lm_head.weight"] = emb

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def main_dtype(self) -> str:
        """The safetensors dtype holding most of the checkpoint's entries (BF16, F32, ...)."""
        counts: dict[str, int] = {}
        for info in self.tensors.values():
            counts[info.dtype] = counts.get(info.dtype, 0) + info.numel
        return max(counts, key=counts.get) if counts else "none"

    def has(self, name: str) -> bool:
        return name in self.tensors or name in self.aliases

    def resolve(self, name: str) -> str:
        return self.aliases.get(name, name)

    def info(self, name: str) -> TensorInfo:
        return self.tensors[self.resolve(name)]

    def read(
        self, name: str, start: int = 0, stop: int | None = None, out: Buffer | None = None
    ) -> torch.Tensor:
        return super().read(self.resolve(name), start, stop, out)

    def _key(self, name: str) -> str:
        return self.resolve(name)

    def file_of(self, name: str) -> Path:
        return self.info(name).path

    def __repr__(self) -> str:
        return f"Checkpoint({self.source!r}, {len(self.tensors)} tensors)"


def _open_checkpoint(path: Path) -> tuple[list[Path], dict[str, TensorInfo]]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: not a .safetensors file or a checkpoint directory")
        tensors, _ = read_header(path)
        return [path], tensors
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    index = path / INDEX_NAME
    if not index.is_file():
        found = sorted(path.glob("*.safetensors.index.json"))
        index = found[0] if len(found) == 1 else index
    if index.is_file():
        return _open_index(index)
    files = [path / SINGLE_NAME] if (path / SINGLE_NAME).is_file() else []
    files = files or sorted(p for p in path.glob("*.safetensors") if "adapter" not in p.name)
    if not files:
        pickles = [p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth"}]
        hint = (
            f" (found {', '.join(sorted(pickles))}: pickle weights are not read for safety; "
            "convert them to safetensors first)"
            if pickles
            else ""
        )
        raise CheckpointError(f"{path}: no *.safetensors weights{hint}")
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        part, _ = read_header(f)
        for name in part:
            if name in tensors:
                raise CheckpointError(f"{f}: tensor {name!r} is also in {tensors[name].path}")
        tensors.update(part)
    return files, _file_order(tensors)


def _open_index(index: Path) -> tuple[list[Path], dict[str, TensorInfo]]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: invalid safetensors index ({exc})") from exc
    files = sorted({index.parent / f for f in weight_map.values()})
    headers: dict[Path, dict[str, TensorInfo]] = {}
    for f in files:
        if not f.is_file():
            who = next(n for n, v in weight_map.items() if index.parent / v == f)
            raise CheckpointError(f"{index}: shard {f.name} (holding tensor {who!r}) is missing")
        headers[f], _ = read_header(f)
    tensors: dict[str, TensorInfo] = {}
    for name, fname in weight_map.items():
        info = headers[index.parent / fname].get(name)
        if info is None:
            raise CheckpointError(f"{index}: tensor {name!r} is listed but not found in {fname}")
        tensors[name] = info
    return files, _file_order(tensors)


def _file_order(tensors: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    return dict(sorted(tensors.items(), key=lambda kv: (str(kv[1].path), kv[1].offset)))
