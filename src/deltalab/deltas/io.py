"""Streaming checkpoint I/O: read and write Hugging Face safetensors checkpoints in bounded memory.

Reading parses the safetensors header ourselves and copies byte ranges with `pread` into fresh
buffers instead of memory-mapping the file: mapped pages count towards the resident set until the
file is closed, so an mmap reader of a 5 GB shard grows by 5 GB; ours holds only what it asked for.
Any element range of a tensor can be read, which lets callers process huge tensors (a 128k × 4k
embedding) in row chunks.

Writing streams tensors into a safetensors file whose header is planned up front from the known
shapes and dtypes, so a shard is never held in memory either.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from deltalab.errors import CheckpointError

# safetensors dtype names → torch dtypes
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "BOOL": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_HEADER = 100 * 2**20  # safetensors itself refuses headers above 100 MB
# Names a tied output embedding may be stored under (GPT-2, Llama/Qwen/Mistral/Gemma, NeoX, OPT).
_EMBEDDING_NAMES = (
    "model.embed_tokens.weight",
    "transformer.wte.weight",
    "wte.weight",
    "model.decoder.embed_tokens.weight",
    "gpt_neox.embed_in.weight",
    "embed_tokens.weight",
)
# Files copied from the base next to written weights: configs and tokenizers, never code or weights.
_AUX_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja")
HUB_PATTERNS = [
    "*.safetensors",
    "*.json",
    "tokenizer*",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]


_ITEMSIZE = {name: torch.empty((), dtype=dt).element_size() for name, dt in DTYPES.items()}


def itemsize(dtype: str) -> int:
    return _ITEMSIZE[dtype]


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and absolute byte offset of its data."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header; truncated or corrupt files raise CheckpointError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(
                    f"{path}: truncated safetensors file ({size} bytes, no header)"
                )
            n = int.from_bytes(head, "little")
            if n > size - 8 or n > _MAX_HEADER:
                raise CheckpointError(
                    f"{path}: header length {n} exceeds the file size {size}: "
                    "truncated or not a safetensors file"
                )
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from exc
    metadata = header.pop("__metadata__", None) or {}
    data_start, data_len = 8 + n, size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
            if dtype not in DTYPES:
                raise ValueError(f"unknown dtype {dtype!r}")
            if any(not isinstance(d, int) or d < 0 for d in shape) or not 0 <= begin <= end:
                raise ValueError("invalid shape or offsets")
            expected = math.prod(shape) * itemsize(dtype)
            if end - begin != expected:
                raise ValueError(f"{end - begin} data bytes for {expected} expected")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: corrupt header entry for tensor {name!r} ({exc})"
            ) from exc
        if end > data_len:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at data byte {end} but the file holds only "
                f"{data_len} data bytes (truncated file?)"
            )
        tensors[name] = TensorInfo(name, path, dtype, shape, data_start + begin, end - begin)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


class Buffer:
    """A growable byte buffer reused across reads and conversions of the same size class."""

    def __init__(self) -> None:
        self._t = torch.empty(0, dtype=torch.uint8)

    def get(self, nbytes: int) -> torch.Tensor:
        if self._t.numel() < nbytes:
            self._t = torch.empty(nbytes, dtype=torch.uint8)
        return self._t[:nbytes]


BLOCK = 1 << 20  # elements per block of the fused read/convert/subtract loops (stays in cache)


class BlockReader:
    """Reads blocks of tensors into a few rotating buffers, so a block just read is still in the
    CPU cache when it is converted, and a block queued for hashing is not overwritten (a
    `Sha256` keeps at most 2 pending updates; 4 buffers rotate)."""

    def __init__(self, rotate: int = 4) -> None:
        self._bufs = [Buffer() for _ in range(rotate)]
        self._i = 0

    def read(self, ckpt: SafetensorsReader, name: str, start: int, stop: int) -> torch.Tensor:
        self._i += 1
        return ckpt.read(name, start, stop, self._bufs[self._i % len(self._bufs)])


def f32_into(
    ckpt: SafetensorsReader,
    name: str,
    start: int,
    stop: int,
    out: torch.Tensor,
    reader: BlockReader,
) -> torch.Tensor:
    """Elements [start, stop) of a tensor converted to fp32 into `out`, block by block."""
    for s in range(start, stop, BLOCK):
        e = min(s + BLOCK, stop)
        out[s - start : e - start].copy_(reader.read(ckpt, name, s, e))
    return out


def delta_into(
    base: SafetensorsReader,
    finetuned: SafetensorsReader,
    name: str,
    start: int,
    stop: int,
    shared: int,
    out: torch.Tensor,
    readers: tuple[BlockReader, BlockReader],
    base_out: torch.Tensor | None = None,
    hashes: tuple[Sha256 | None, Sha256 | None] = (None, None),
) -> float:
    """Write finetuned − base (fp32) of flat elements [start, stop) into `out`, block by block
    (read, hash, convert and subtract while the block is in cache); 0 beyond `shared` (rows the
    finetuned model lacks). `base_out` receives the base in fp32. Returns Σ delta²."""
    from deltalab.deltas.topk import sum_squares

    norm2 = 0.0
    for s in range(start, stop, BLOCK):
        e = min(s + BLOCK, stop)
        raw_b = readers[0].read(base, name, s, e)
        if hashes[0] is not None:
            hashes[0].update(raw_b)
        if base_out is not None:
            base_out[s - start : e - start].copy_(raw_b)
        d = out[s - start : e - start]
        f_end = max(s, min(e, shared))
        if f_end > s:
            raw_f = readers[1].read(finetuned, name, s, f_end)
            if hashes[1] is not None:
                hashes[1].update(raw_f)
            d[: f_end - s].copy_(raw_f)
            d[: f_end - s].sub_(raw_b[: f_end - s])
        if f_end < e:
            d[f_end - s :].zero_()
        norm2 += sum_squares(d)
    return norm2


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


class Sha256:
    """sha256 of tensor bytes, computed on a worker thread so hashing overlaps reading and math
    (hashlib releases the GIL). At most `queue` buffers wait, which bounds the memory held."""

    _pool: ThreadPoolExecutor

    @classmethod
    def _new_pool(cls) -> None:
        cls._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltalab-sha256")  # FIFO

    def __init__(self, queue: int = 2) -> None:
        self._hash = hashlib.sha256()
        self._pending: deque[Future] = deque()
        self._queue = queue

    def update(self, data: torch.Tensor) -> None:
        view = memoryview(data.reshape(-1).view(torch.uint8).numpy())  # keeps `data` alive
        self._pending.append(self._pool.submit(self._hash.update, view))
        while len(self._pending) > self._queue:
            self._pending.popleft().result()

    def wait(self) -> None:
        """Block until every queued buffer is hashed (before its memory is reused)."""
        while self._pending:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        self.wait()
        return self._hash.hexdigest()


Sha256._new_pool()
if hasattr(os, "register_at_fork"):  # POSIX: a forked child inherits the pool but not its thread
    os.register_at_fork(after_in_child=Sha256._new_pool)

# ---------------------------------------------------------------------------------------------
# Resolving local directories and hub ids


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


# ---------------------------------------------------------------------------------------------
# Writing


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


# ---------------------------------------------------------------------------------------------
# Chunking


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) view of a tensor: first dim × the rest; 1-D tensors are one column."""
    if len(shape) == 0:
        return 1, 1
    return shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1


def row_chunks(rows: int, cols: int, max_elements: int) -> list[tuple[int, int]]:
    """Flat element ranges of whole rows, about `max_elements` each; starts are multiples of 8."""
    n = rows * cols
    if n <= max_elements:
        return [(0, n)]
    per = max(8, (max_elements // max(cols, 1)) // 8 * 8)
    return [(r * cols, min(r + per, rows) * cols) for r in range(0, rows, per)]


_SANITIZE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of a label."""
    return _SANITIZE.sub("_", text).strip("_") or "x"


# ---------------------------------------------------------------------------------------------
# Pairing a finetuned checkpoint with its base


def pair_tensors(base: Checkpoint, finetuned: Checkpoint) -> dict[str, int | None]:
    """Float tensors to compare, in base order → finetuned row count if the vocabulary was resized.

    Tied weights stored on one side only (`lm_head.weight`) pair with the other side's embedding.
    Any other missing or extra tensor, or a shape that differs beyond the first dimension, means
    mismatched architectures and raises CheckpointError naming the file and tensor.
    """
    names = list(base.tensors) + [n for n in finetuned.tensors if n not in base.tensors]
    out: dict[str, int | None] = {}
    for name in names:
        if not base.has(name):
            raise CheckpointError(
                f"{finetuned.file_of(name)}: tensor {name!r} is not in the base {base.path} "
                "(mismatched architectures?)"
            )
        if not finetuned.has(name):
            raise CheckpointError(
                f"{finetuned.path}: tensor {name!r} of the base {base.file_of(name)} is missing "
                "(mismatched architectures?)"
            )
        b, f = base.info(name), finetuned.info(name)
        if not (b.is_float and f.is_float):
            continue
        if b.shape != f.shape:
            if len(b.shape) != len(f.shape) or b.shape[1:] != f.shape[1:] or not b.shape:
                raise CheckpointError(
                    f"{f.path}: tensor {name!r} has shape {list(f.shape)} but the base "
                    f"{b.path} has {list(b.shape)} (mismatched architectures?)"
                )
            out[name] = f.shape[0]
        else:
            out[name] = None
    return out
