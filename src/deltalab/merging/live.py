"""In-memory merge: set a loaded model's weights to cast(base_fp32 + Σ scaleᵢ · τᵢ) for any scales.

Keeps a master copy of each base tensor that a vector touches and the vectors in their sparse
form (block-local int32 indices + fp32 values, rescale applied), on the model's device. Every
`apply` rebuilds the touched weights from the master copy with `merge.add_scaled`, the step the
checkpoint writer uses: trial after trial the weights never drift (no add-then-subtract), scales
(0, 0) give the base bit for bit, and any scales give the bits that `merge()` writes to disk.

The master copy stays in the base's own dtype when that converts to fp32 exactly (fp32, bf16,
fp16 all do), and each tensor is rebuilt in cache-sized blocks: upcast a block, add the kept
entries that fall in it, cast it into the parameter. A bf16 model then costs ~4 bytes of memory
traffic per weight per trial instead of ~14 for a whole-tensor fp32 pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from deltalab.errors import CheckpointError
from deltalab.merging.compare import check_vector_pair
from deltalab.merging.disk import stack_dense
from deltalab.merging.method_spec import MethodParams
from deltalab.merging.method_spec import check as check_method
from deltalab.merging.methods import METHODS, combine_delta, prepare_delta
from deltalab.merging.step import add_scaled
from deltalab.merging.vectors import TaskVector
from deltalab.tensors.hashing import Sha256
from deltalab.tensors.reader import Checkpoint

CPU_BLOCK = 1 << 18  # elements rebuilt at a time on CPU: fp32 block + values stay in L2


@dataclass
class _Term:
    idx: torch.Tensor | None  # block-local indices of kept entries, int32 (None: dense values)
    values: torch.Tensor  # fp32, rescaled
    bounds: list[int]  # kept entries of block b: [bounds[b], bounds[b + 1])


@dataclass
class _Slot:
    param: torch.Tensor
    base: torch.Tensor  # flat master copy (dtype converts to fp32 exactly)
    blocks: list[tuple[int, int]]
    terms: list[_Term | None]  # one per vector (None: the vector leaves this tensor alone)


def _term(idx: np.ndarray | None, values: torch.Tensor, blocks, device) -> _Term:
    if idx is None:
        return _Term(None, values.to(device), [])
    starts = np.array([s for s, _ in blocks] + [blocks[-1][1] if blocks else 0])
    bounds = np.searchsorted(idx, starts).tolist()
    local = idx - np.repeat(starts[:-1], np.diff(bounds))  # offsets within each block
    return _Term(torch.from_numpy(local.astype(np.int32)).to(device), values.to(device), bounds)


class LiveMerge:
    """Apply merge scales to `model` in place; `model` was loaded from `base`.

    `method` other than task arithmetic (`merging.methods`) keeps each touched tensor's dense
    task vectors beside the master copy, prepares them (trim, drop) once per parameter set and
    combines them whole per trial with the steps the checkpoint writer composes
    (`merge_delta` = combine ∘ prepare), so a live trial holds the written bits."""

    def __init__(
        self,
        model: torch.nn.Module,
        base: Checkpoint,
        vectors: Sequence[TaskVector],
        block: int | None = None,
        method: str = "task_arithmetic",
        method_params: MethodParams | None = None,
    ) -> None:
        if not vectors:
            raise ValueError("LiveMerge needs at least one task vector")
        check_vector_pair(vectors)
        for vector in vectors:
            vector.check_base(base)
        state = model.state_dict(keep_vars=True)
        touched = dict.fromkeys(name for v in vectors for name in v.entries)
        self.vectors = list(vectors)
        self.method, self.method_params = method, method_params or MethodParams()
        check_method(method, self.method_params)
        # other methods: name -> (the vectors that touch it, their dense τ stacked [m, n]), and
        # the prepared τ (trimmed, dropped: scale-independent) for the params they were made with
        self.dense: dict[str, tuple[list[int], torch.Tensor]] = {}
        self.prepared: dict[str, torch.Tensor] = {}
        self._prepared_with: MethodParams | None = None
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
            exact = raw.dtype in (torch.float32, torch.bfloat16, torch.float16)
            master = (raw if exact else raw.float()).reshape(-1).to(device)
            n = info.numel
            step = block or (CPU_BLOCK if device.type == "cpu" else max(n, 1))
            blocks = [(s, min(s + step, n)) for s in range(0, n, step)]
            if method != "task_arithmetic":
                used = [i for i, v in enumerate(vectors) if name in v.entries]
                stack = stack_dense([vectors[i] for i in used], name, n)
                self.dense[name] = (used, stack.to(device))
            terms: list[_Term | None] = []
            for vector in vectors:
                if name not in vector.entries:
                    terms.append(None)
                    continue
                ((idx, values),) = vector.sparse_chunks(name, [(0, n)])
                terms.append(_term(idx, values, blocks, device))
            self.slots[name] = _Slot(param, master, blocks, terms)
        largest = max((s.blocks[0][1] for s in self.slots.values() if s.blocks), default=0)
        devices = {s.base.device for s in self.slots.values()}
        self._work = {d: torch.empty(largest, dtype=torch.float32, device=d) for d in devices}

    @property
    def nbytes(self) -> int:
        """Memory held for the master copy and the sparse vectors."""
        total = sum(t.nbytes for _, t in self.dense.values())
        total += sum(p.nbytes for n, p in self.prepared.items() if p is not self.dense[n][1])
        for slot in self.slots.values():
            total += slot.base.nbytes
            for t in slot.terms:
                if t is not None:
                    total += t.values.nbytes + (0 if t.idx is None else t.idx.nbytes)
        return total

    @torch.no_grad()
    def apply(self, scales: Sequence[float], values: Mapping[str, float] | None = None) -> None:
        """Set every touched weight to cast(base_fp32 + Σ scaleᵢ · τᵢ), merged by the method;
        `values` replace some of its parameters for this call (a search trial's density)."""
        if len(scales) != len(self.vectors):
            raise ValueError(f"{len(scales)} scales for {len(self.vectors)} vectors")
        scales = [float(s) for s in scales]
        if values and self.method == "task_arithmetic":
            raise ValueError(f"task_arithmetic reads no method parameters, got {sorted(values)}")
        if self.method != "task_arithmetic":
            params = replace(self.method_params, **values) if values else self.method_params
            if params != self._prepared_with:  # trims and drops: once per parameter set
                check_method(self.method, params)
                own = METHODS[self.method].prepares  # prepare overwrites: give it a copy
                self.prepared = {
                    name: prepare_delta(self.method, taus.clone() if own else taus, params, name)
                    for name, (_, taus) in self.dense.items()
                }
                self._prepared_with = params
            for name, slot in self.slots.items():
                used, _ = self.dense[name]
                delta = combine_delta(self.method, self.prepared[name],
                                      [scales[i] for i in used], params)  # fmt: skip
                # base + delta in fp32 and one cast, as `disk.merged_tensor` writes it
                slot.param.view(-1).copy_(delta.add_(slot.base))
            return
        for slot in self.slots.values():
            device = slot.base.device
            flat = slot.param.view(-1)
            for b, (start, stop) in enumerate(slot.blocks):
                w = self._work[device][: stop - start].copy_(slot.base[start:stop])
                for term, scale in zip(slot.terms, scales, strict=True):
                    if term is None:
                        continue
                    if term.idx is None:
                        lo, hi, idx = start, stop, None
                    else:
                        lo, hi = term.bounds[b], term.bounds[b + 1]
                        idx = term.idx[lo:hi]
                    add_scaled(w, idx, term.values[lo:hi], scale)
                flat[start:stop].copy_(w)
