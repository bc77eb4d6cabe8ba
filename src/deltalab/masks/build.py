"""Binary masks of the most important parameters: magnitude, momentum, Fisher, random.

A mask keeps the top `density` share of a score (|ΔW|, |Adam exp_avg|, the Fisher diagonal, or a
seeded random number), exactly k entries with deterministic ties (`tensors.topk`), either per
tensor or over all eligible tensors at once (`selection: global`). Scores stream one tensor at a
time, so memory is bounded by the largest tensor, not by the model.

File format (safetensors, `format` = "deltalab.mask", version 1): per tensor `NAME:mask`, U8,
ceil(n/8) bytes, bit i of byte j (little bit order) set when entry 8j+i is kept (the task vectors'
packing: an 8B mask is ~1 GB, not 8 GB); metadata `tensors` (JSON: shape and kept count per
tensor) and method, density, selection, seed and the identity of what was scored.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from deltalab import __version__
from deltalab.atomic import atomic_file
from deltalab.deltas.classify import classify
from deltalab.errors import CheckpointError, ConfigError
from deltalab.tensors.format import read_header
from deltalab.tensors.reader import Checkpoint, SafetensorsReader
from deltalab.tensors.topk import MaskBuilder, find_threshold, topk_count, topk_mask
from deltalab.tensors.writer import SafetensorsWriter

FORMAT = "deltalab.mask"
FORMAT_VERSION = "1"
METHODS = ("magnitude", "momentum", "fisher", "random")
SELECTIONS = ("tensor", "global")

# name -> (shape, a function returning the flat fp32 score of that tensor)
Scores = Mapping[str, tuple[tuple[int, ...], Callable[[], torch.Tensor]]]


def check_density(density: float) -> float:
    if not (isinstance(density, int | float) and 0.0 < density <= 1.0):
        raise ConfigError(f"mask density must be in (0, 1], got {density!r}")
    return float(density)


def eligible(names: Iterable[str], exclude_modules: Sequence[str]) -> list[str]:
    """Tensor names whose module (embedding, norm, lm_head, attn_q, mlp_up, ...; see
    `deltas.classify`) is not excluded."""
    return [n for n in names if classify(n).module not in set(exclude_modules)]


def random_scores(shape: Sequence[int], name: str, seed: int) -> torch.Tensor:
    """Uniform scores seeded by (seed, tensor name): the same mask whatever the tensor order."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return torch.rand(math.prod(shape), generator=gen)


def _within(
    mask_of: Callable[[torch.Tensor], torch.Tensor],
    score: torch.Tensor,
    allowed: torch.Tensor | None,
) -> torch.Tensor:
    """`mask_of` applied to the allowed entries only, scattered back (all allowed: unchanged)."""
    if allowed is None:
        return mask_of(score)
    idx = allowed.reshape(-1).nonzero().reshape(-1)
    out = torch.zeros(score.numel(), dtype=torch.bool)
    out[idx] = mask_of(score.reshape(-1)[idx])
    return out


def select(
    scores: Scores,
    density: float,
    selection: str,
    moved: Mapping[str, Callable[[], torch.Tensor]] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, flat bool mask) per tensor: the top `density` of each tensor's scores, or of all
    scores pooled (`global`: exactly round(density · Σn) entries over all tensors).

    With `moved` (name → bool tensor of the entries whose delta is not exactly zero), only those
    can be selected: where fewer entries moved than the density asks, the mask keeps all of them
    and its density is what it reached (never filled with unchanged entries in index order).
    """
    density = check_density(density)
    if selection not in SELECTIONS:
        raise ConfigError(f"mask selection must be one of {SELECTIONS}, got {selection!r}")

    def allowed(name: str) -> torch.Tensor | None:
        if moved is None:
            return None
        bits = moved[name]().reshape(-1)
        return None if bool(bits.all()) else bits

    if selection == "tensor":
        for name, (shape, score) in scores.items():
            k = topk_count(math.prod(shape), density)
            yield (
                name,
                _within(lambda x, k=k: topk_mask(x, min(k, x.numel())), score(), allowed(name)),
            )
        return
    total = sum(math.prod(shape) for shape, _ in scores.values())
    k = topk_count(total, density)
    masks = {name: allowed(name) for name in scores}

    def stream() -> Iterator[torch.Tensor]:
        for name, (_, score) in scores.items():
            s, a = score(), masks[name]
            yield s if a is None else s.reshape(-1)[a]

    movable = sum(
        math.prod(sh) if masks[n] is None else int(masks[n].sum()) for n, (sh, _) in scores.items()
    )
    builder = MaskBuilder(find_threshold(stream, min(k, movable)))
    for name, (_, score) in scores.items():  # the stream's order: ties fill in that order
        yield name, _within(builder, score(), masks[name])


def moved_entries(
    base: Checkpoint, tuned: Checkpoint, names: Sequence[str]
) -> dict[str, Callable[[], torch.Tensor]]:
    """name → the entries whose delta is not exactly zero (what a mask of this run may select)."""
    return {
        n: (lambda n=n: tuned.read_f32(n).reshape(-1) != base.read_f32(n).reshape(-1))
        for n in names
    }


def score_sources(
    base: Checkpoint,
    tuned: Checkpoint,
    names: Sequence[str],
    methods: Sequence[str],
    *,
    moments: str | os.PathLike | None = None,
    fisher: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Scores]:
    """Per method, the lazily computed score of every tensor in `names`: |tuned − base|,
    |exp_avg| from a `moments` safetensors file (keyed by parameter name), a precomputed Fisher
    diagonal, or seeded random numbers. Shapes and names are checked before any score is read."""
    shapes = {n: tuple(base.info(n).shape) for n in names}
    for n in names:
        if not tuned.has(n) or tuple(tuned.info(n).shape) != shapes[n]:
            raise CheckpointError(f"{tuned.path}: tensor {n!r} missing or not shaped like the base")
    out: dict[str, Scores] = {}
    for method in methods:
        if method not in METHODS:
            raise ConfigError(f"unknown mask method {method!r} (known: {list(METHODS)})")
        if method == "magnitude":
            out[method] = {
                n: (shapes[n], lambda n=n: (tuned.read_f32(n) - base.read_f32(n)).abs_())
                for n in names
            }
        elif method == "momentum":
            if moments is None:
                raise ConfigError("the momentum mask needs the optimizer moments (exp_avg file)")
            tensors, _ = read_header(Path(moments))
            for n in names:
                if n not in tensors or tuple(tensors[n].shape) != shapes[n]:
                    raise CheckpointError(
                        f"{moments}: no moments of shape {list(shapes[n])} for tensor {n!r} "
                        "(moments of another run?)"
                    )
            reader = SafetensorsReader(tensors)
            out[method] = {
                n: (shapes[n], lambda n=n, r=reader: r.read_f32(n).reshape(-1).abs()) for n in names
            }
        elif method == "fisher":
            if fisher is None:
                raise ConfigError("the fisher mask needs calibration data")
            missing = [n for n in names if n not in fisher]
            if missing:
                raise CheckpointError(f"no Fisher diagonal for {missing[:3]} (frozen parameters?)")
            out[method] = {n: (shapes[n], lambda n=n: fisher[n].reshape(-1)) for n in names}
        else:
            out[method] = {
                n: (shapes[n], lambda n=n: random_scores(shapes[n], n, seed)) for n in names
            }
    return out


def build_masks(
    out_dir: str | os.PathLike,
    sources: Mapping[str, Scores],
    density: float,
    selection: str,
    meta: Mapping[str, str],
    moved: Mapping[str, Callable[[], torch.Tensor]] | None = None,
) -> dict[str, Path]:
    """One packed mask file per method in `out_dir` (which must exist); with `moved`, every
    mask selects only entries the run changed (and records how many could be selected)."""
    files = {}
    movable = None
    if moved is not None:
        movable = {n: int(fn().sum()) for n, fn in moved.items()}
    for method, scores in sources.items():
        shapes = {n: shape for n, (shape, _) in scores.items()}
        path = Path(out_dir) / f"{method}.safetensors"
        masks = select(scores, density, selection, moved)
        write_mask(path, masks, shapes, {**meta, "method": method}, movable)
        files[method] = path
    return files


def write_mask(
    path: str | os.PathLike,
    masks: Iterable[tuple[str, torch.Tensor]],
    shapes: Mapping[str, tuple[int, ...]],
    meta: Mapping[str, str],
    movable: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Write masks (flat bool, in `shapes` order) as packed bits; atomic. Returns the metadata.
    `movable`: per tensor, how many entries the mask could select (recorded when fewer than all)."""
    plan = [(f"{n}:mask", "U8", ((math.prod(s) + 7) // 8,)) for n, s in shapes.items()]
    entries: dict[str, dict] = {}
    with atomic_file(path) as tmp:
        reserve = sum(len(n) + 200 for n in shapes) + 4096
        writer = SafetensorsWriter(tmp, plan, {"format": FORMAT}, reserve)
        try:
            for name, mask in masks:
                bits = mask.reshape(-1).numpy()
                if bits.size != math.prod(shapes[name]):
                    raise ValueError(f"{name}: mask of {bits.size} entries for {shapes[name]}")
                writer.write(f"{name}:mask", torch.from_numpy(np.packbits(bits, bitorder="little")))
                entries[name] = {"shape": list(shapes[name]), "kept": int(bits.sum())}
                if movable is not None and movable[name] < bits.size:
                    entries[name]["movable"] = movable[name]
            metadata = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "deltalab_version": __version__,
                **meta,
                "tensors": json.dumps(entries, separators=(",", ":")),
            }
            writer.close(metadata)
        except BaseException:
            writer.abort()
            raise
    return metadata


class MaskFile:
    """A mask file opened for reading: `mask(name)` is the bool tensor in the tensor's shape."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such mask file")
        try:
            tensors, meta = read_header(self.path)
        except CheckpointError as exc:
            raise CheckpointError(f"{self.path}: not a readable mask file ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}: not a deltalab mask (no format metadata)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{self.path}: mask format version {meta.get('format_version')!r} not supported"
            )
        try:
            self.entries: dict[str, dict] = json.loads(meta["tensors"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: corrupt mask metadata ({exc})") from exc
        for name, e in self.entries.items():
            key = f"{name}:mask"
            if key not in tensors or tensors[key].shape != ((math.prod(e["shape"]) + 7) // 8,):
                raise CheckpointError(f"{self.path}: tensor {name!r}: packed mask missing or bad")
        self.meta = meta
        self._reader = SafetensorsReader(tensors)

    @property
    def density(self) -> float:
        kept = sum(e["kept"] for e in self.entries.values())
        return kept / max(1, sum(math.prod(e["shape"]) for e in self.entries.values()))

    def packed(self, name: str) -> np.ndarray:
        return self._reader.read(f"{name}:mask").numpy()

    def mask(self, name: str) -> torch.Tensor:
        shape = self.entries[name]["shape"]
        n = math.prod(shape)
        bits = np.unpackbits(self.packed(name), count=n, bitorder="little").view(np.bool_)
        return torch.from_numpy(bits.copy()).view(shape)

    def check_model(self, named_shapes: Mapping[str, Sequence[int]], where: str) -> None:
        """Every masked tensor must exist in the model with the same shape."""
        for name, e in self.entries.items():
            shape = named_shapes.get(name)
            if shape is None:
                raise CheckpointError(f"{self.path}: tensor {name!r} is not in {where}")
            if list(shape) != list(e["shape"]):
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} has shape {e['shape']} but {where} has "
                    f"{list(shape)}"
                )

    def close(self) -> None:
        self._reader.close()


def export_pt(mask: MaskFile, out: str | os.PathLike) -> int:
    """`{name: bool tensor}` as a torch file that `torch.load(..., weights_only=True)` reads."""
    with atomic_file(out) as tmp:
        torch.save({name: mask.mask(name) for name in mask.entries}, tmp)
    return len(mask.entries)


def layer_module(name: str) -> tuple[str, str]:
    loc = classify(name)
    return ("-" if loc.layer is None else str(loc.layer)), loc.module
