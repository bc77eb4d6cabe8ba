"""In-memory merge: set a loaded model's weights to cast(base_fp32 + Σ scaleᵢ · τᵢ) for any scales.

Keeps an fp32 master copy of each base tensor that a vector touches and the vectors in their
sparse form (flat indices + fp32 values, rescale applied), on the model's device. Every `apply`
rebuilds the touched weights from the master copy with `merge.add_scaled`, the step the
checkpoint writer uses: trial after trial the weights never drift (no add-then-subtract), scales
(0, 0) give the base bit for bit, and any scales give the bits that `merge()` writes to disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deltalab.deltas.io import Checkpoint, Sha256
from deltalab.deltas.merge import add_scaled
from deltalab.deltas.vectors import TaskVector
from deltalab.errors import CheckpointError


@dataclass
class _Term:
    idx: torch.Tensor | None  # flat indices of kept entries (None: dense values)
    values: torch.Tensor  # fp32, rescaled


@dataclass
class _Slot:
    param: torch.Tensor
    base: torch.Tensor  # flat fp32 master copy
    terms: list[_Term | None]  # one per vector (None: the vector leaves this tensor alone)


def check_vector_pair(vectors: Sequence[TaskVector]) -> None:
    """Vectors merged together must come from one base and have the same tensors and shapes."""
    first = vectors[0]
    for other in vectors[1:]:
        if other.meta.get("base_sha256") != first.meta.get("base_sha256"):
            raise CheckpointError(
                f"{other.path}: made from a different base than {first.path} "
                f"({other.meta.get('base')} vs {first.meta.get('base')})"
            )
        for name, e in other.entries.items():
            mine = first.entries.get(name)
            if mine is None or mine["shape"] != e["shape"]:
                raise CheckpointError(
                    f"{other.path}: tensor {name!r} {e['shape']} does not match {first.path} "
                    f"({None if mine is None else mine['shape']}): different architectures"
                )


class LiveMerge:
    """Apply merge scales to `model` in place; `model` was loaded from `base`."""

    def __init__(
        self, model: torch.nn.Module, base: Checkpoint, vectors: Sequence[TaskVector]
    ) -> None:
        if not vectors:
            raise ValueError("LiveMerge needs at least one task vector")
        check_vector_pair(vectors)
        for vector in vectors:
            vector.check_base(base)
        state = model.state_dict(keep_vars=True)
        touched = dict.fromkeys(name for v in vectors for name in v.entries)
        self.vectors = list(vectors)
        self.slots: dict[str, _Slot] = {}
        for name in touched:
            param = state.get(name)
            info = base.info(name)
            if param is None or tuple(param.shape) != tuple(info.shape):
                raise CheckpointError(
                    f"{base.path}: tensor {name!r} {list(info.shape)} has no counterpart in the "
                    f"loaded model ({None if param is None else list(param.shape)})"
                )
            raw = base.read(name)
            hasher = Sha256()
            hasher.update(raw)
            digest = hasher.hexdigest()
            for vector in vectors:
                e = vector.entries.get(name)
                if e is not None and e["base_sha256"] != digest:
                    raise CheckpointError(
                        f"{vector.path}: tensor {name!r} was computed from a different base "
                        f"than {info.path}; merge it into the base it was made from "
                        f"({vector.meta.get('base')})"
                    )
            device = param.device
            master = raw.to(device=device, dtype=torch.float32).reshape(-1)
            terms: list[_Term | None] = []
            n = info.numel
            for vector in vectors:
                if name not in vector.entries:
                    terms.append(None)
                    continue
                ((idx, values),) = vector.sparse_chunks(name, [(0, n)])
                terms.append(
                    _Term(
                        None if idx is None else torch.from_numpy(idx).to(device),
                        values.to(device),
                    )
                )
            self.slots[name] = _Slot(param, master, terms)
        largest = max((s.base.numel() for s in self.slots.values()), default=0)
        devices = {s.base.device for s in self.slots.values()}
        self._work = {d: torch.empty(largest, dtype=torch.float32, device=d) for d in devices}
        self._scratch = {d: torch.empty(largest, dtype=torch.float32, device=d) for d in devices}

    @property
    def nbytes(self) -> int:
        """Memory held for the master copy and the sparse vectors."""
        total = 0
        for slot in self.slots.values():
            total += slot.base.nbytes
            for t in slot.terms:
                if t is not None:
                    total += t.values.nbytes + (0 if t.idx is None else t.idx.nbytes)
        return total

    @torch.no_grad()
    def apply(self, scales: Sequence[float]) -> None:
        """Set every touched weight to cast(base_fp32 + Σ scaleᵢ · τᵢ)."""
        if len(scales) != len(self.vectors):
            raise ValueError(f"{len(scales)} scales for {len(self.vectors)} vectors")
        scales = [float(s) for s in scales]
        for slot in self.slots.values():
            n = slot.base.numel()
            device = slot.base.device
            w = self._work[device][:n].copy_(slot.base)
            for term, scale in zip(slot.terms, scales, strict=True):
                if term is None:
                    continue
                values = self._scratch[device][: term.values.numel()].copy_(term.values)
                add_scaled(w, term.idx, values, scale)
            slot.param.copy_(w.view(slot.param.shape))
