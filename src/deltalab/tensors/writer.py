"""Streaming writes of safetensors files and sharded Hugging Face checkpoints.

The header is planned up front from the known shapes and dtypes, so a shard is never held in
memory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from deltalab.tensors.format import DTYPES, INDEX_NAME, SINGLE_NAME, itemsize

# Files copied from the base next to written weights: configs and tokenizers, never code or weights.
_AUX_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja")


def _encode_header(header: dict, reserve: int = 0) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    size = len(raw) + reserve
    size += -(size + 8) % 8  # data starts 8-byte aligned
    return raw + b" " * (size - len(raw))


class SafetensorsWriter:
    """Stream tensors into one safetensors file in a planned order, chunk by chunk.

    The header (names, dtypes, shapes, offsets) is written first from `plan`; `reserve` bytes of
    header padding let `close(metadata=...)` store metadata known only at the end (norms, hashes).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        plan: Sequence[tuple[str, str, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
        reserve: int = 0,
    ) -> None:
        self.path = Path(path)
        self._plan = [(n, d, tuple(s)) for n, d, s in plan]
        self._empty = {n for n, _, s in self._plan if math.prod(s) == 0}
        self._header: dict = {}
        offset = 0
        for name, dtype, shape in self._plan:
            nbytes = math.prod(shape) * itemsize(dtype)
            self._header[name] = {
                "dtype": dtype,
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        self._header_bytes = _encode_header(self._with_meta(metadata), reserve)
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._f.write(len(self._header_bytes).to_bytes(8, "little") + self._header_bytes)
        self._pos = 0  # index into plan
        self._done = 0  # elements of the current tensor written
        self._skip_empty()

    def _skip_empty(self) -> None:
        # zero-size tensors hold no bytes: they are complete before anything is written
        while self._pos < len(self._plan) and self._plan[self._pos][0] in self._empty:
            self._pos += 1

    def _with_meta(self, metadata: dict[str, str] | None) -> dict:
        return {"__metadata__": dict(metadata)} | self._header if metadata else self._header

    @property
    def current(self) -> str | None:
        return self._plan[self._pos][0] if self._pos < len(self._plan) else None

    def write(self, name: str, data: torch.Tensor) -> None:
        """Append the next elements (flattened) of tensor `name`; tensors come in plan order."""
        # nothing to write to a zero-size tensor: accepted wherever the plan stands
        empty = name in self._empty and not data.numel()
        if not empty and (self._pos >= len(self._plan) or self._plan[self._pos][0] != name):
            raise RuntimeError(f"{self.path}: got tensor {name!r}, expected {self.current!r}")
        dtype = self._header[name]["dtype"]
        if data.dtype != DTYPES[dtype]:
            raise RuntimeError(f"{self.path}: tensor {name!r} is {data.dtype}, planned {dtype}")
        if empty:
            return
        shape = self._plan[self._pos][2]
        n = data.numel()
        if self._done + n > math.prod(shape):
            raise RuntimeError(f"{self.path}: too many elements for tensor {name!r}")
        if n:
            flat = data.detach().reshape(-1).contiguous().cpu()
            self._f.write(memoryview(flat.view(torch.uint8).numpy()))
        self._done += n
        if self._done == math.prod(shape):
            self._pos, self._done = self._pos + 1, 0
            self._skip_empty()

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Finish the file; `metadata` (if given) replaces the header metadata in place."""
        if self._pos != len(self._plan):
            self.abort()
            raise RuntimeError(f"{self.path}: tensor {self.current!r} was not written")
        if metadata is not None:
            raw = json.dumps(self._with_meta(metadata), separators=(",", ":")).encode()
            if len(raw) > len(self._header_bytes):
                self.abort()
                raise RuntimeError(f"{self.path}: metadata exceeds the reserved header space")
            self._f.seek(8)
            self._f.write(raw + b" " * (len(self._header_bytes) - len(raw)))
        self._f.close()

    def abort(self) -> None:
        self._f.close()


def plan_shards(
    plan: Sequence[tuple[str, str, tuple[int, ...]]], max_shard_bytes: int
) -> list[list[tuple[str, str, tuple[int, ...]]]]:
    """Split a tensor plan into consecutive shards of at most `max_shard_bytes` (one tensor min)."""
    shards: list[list] = [[]]
    size = 0
    for entry in plan:
        nbytes = math.prod(entry[2]) * itemsize(entry[1])
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


class CheckpointWriter:
    """Write a (sharded) HF safetensors checkpoint tensor by tensor, chunk by chunk, in order."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        plan: Sequence[tuple[str, str, tuple[int, ...]]],
        max_shard_bytes: int = 5 * 2**30,
    ) -> None:
        self.out_dir = Path(out_dir)
        self._shards = plan_shards(plan, max_shard_bytes)
        n = len(self._shards)
        self._files = [
            SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)
        ]
        self._where = {e[0]: i for i, shard in enumerate(self._shards) for e in shard}
        self._total = sum(math.prod(e[2]) * itemsize(e[1]) for e in plan)
        self._open: SafetensorsWriter | None = None
        self._open_idx = -1

    def _open_through(self, idx: int) -> None:
        """Close the open shard and open the next ones up to shard `idx` (skipped ones are
        shards holding only empty tensors)."""
        while self._open_idx < idx:
            if self._open is not None:
                self._open.close()
            self._open_idx += 1
            self._open = SafetensorsWriter(
                self.out_dir / self._files[self._open_idx],
                self._shards[self._open_idx],
                metadata={"format": "pt"},
            )

    def write(self, name: str, data: torch.Tensor) -> None:
        idx = self._where[name]
        if idx < self._open_idx:
            raise RuntimeError(f"tensor {name!r} written out of order")
        self._open_through(idx)
        assert self._open is not None
        self._open.write(name, data)

    def close(self) -> None:
        self._open_through(len(self._shards) - 1)
        if self._open is not None:
            self._open.close()
        if len(self._files) > 1:
            index = {
                "metadata": {"total_size": self._total},
                "weight_map": {name: self._files[i] for name, i in self._where.items()},
            }
            (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        if self._open is not None:
            self._open.abort()


def copy_aux_files(src: Path, dst: Path, dtype: str | None = None) -> list[str]:
    """Copy config and tokenizer files (no weights, no code) from a checkpoint directory.

    When the written weights have another dtype than the base, config.json says so.
    """
    copied = []
    if not src.is_dir():
        return copied
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name.startswith(".") or not f.name.endswith(_AUX_SUFFIXES):
            continue
        if f.name.endswith(".safetensors.index.json"):
            continue
        if f.name == "config.json" and dtype is not None:
            config = json.loads(f.read_text())
            name = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(dtype, dtype)
            for key in ("dtype", "torch_dtype"):
                if key in config:
                    config[key] = name
            (dst / f.name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copyfile(f, dst / f.name)
        copied.append(f.name)
    return copied
