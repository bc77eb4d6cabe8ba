"""How post-training moved the weights: the `analyze` driver and its result, `Analysis`.

Every tensor is streamed from the checkpoints (one tensor, or one row chunk of a huge tensor, at a
time, in fp32; `streaming`), so an 8B model is analysed in the memory of its largest chunk. Deltas
that share a base are read together and compared with each other (cosine, sign agreement,
magnitude ratio) before and after keeping their top `top_ratio` entries.

Passes over one tensor (re-reading row chunks from disk only when it does not fit one chunk):
1. sums (‖Δ‖², ‖W‖², zeros, |Δ| ≤ atol, bf16-relative), max |Δ|, a histogram of |Δ| bit patterns
   and the pairwise sums (`accumulators`);
2. the second level of the exact top-k thresholds (top 1% energy, sparsification);
3. masks at those thresholds: energy in the top entries and the sparse pairwise sums;
4. for 2-D deltas, singular values (exact SVD when small, randomized sketch otherwise; `sketch`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from deltalab.deltas.accumulators import (
    DeltaSums,
    PairSums,
    Scratch,
    sumsq,
    update_pair,
    update_pair_sparse,
    update_sums,
)
from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.deltas.selection import NoTensorMatches, compile_patterns, select_names
from deltalab.deltas.sketch import rank_pass
from deltalab.deltas.streaming import Source, Unit, part, units
from deltalab.errors import CheckpointError, ConfigError
from deltalab.tensors.blocks import matrix_shape, row_chunks, sum_squares
from deltalab.tensors.pairing import pair_tensors
from deltalab.tensors.reader import Buffer, Checkpoint
from deltalab.tensors.topk import (
    NONFINITE_BIN,
    MaskBuilder,
    Threshold,
    threshold_from_histogram,
    topk_count,
)


@dataclass
class DeltaInput:
    """One delta to analyse: `finetuned − base`, reported under `label`."""

    label: str
    base: Checkpoint
    finetuned: Checkpoint


@dataclass
class Analysis:
    """Everything `analyze` measured; `deltalab.deltas.summary` aggregates it and
    `deltalab.deltas.report` turns it into files."""

    params: AnalyzeDeltasParams
    deltas: dict[str, dict[str, str]]  # label → {"base": source, "finetuned": source}
    pairs: dict[str, tuple[str, str]]  # pair key → (label a, label b)
    tensors: list[dict] = field(default_factory=list)  # one row per (delta, unit)
    pair_tensors: list[dict] = field(default_factory=list)  # one row per (pair, unit)
    sums: dict[tuple[str, int | None, str], DeltaSums] = field(default_factory=dict)
    pair_sums: dict[tuple[str, int | None, str], PairSums] = field(default_factory=dict)
    histograms: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    resized: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    # {"include": [...], "exclude": [...], "tensors": N, "of": M} when a name filter was given
    selected: dict | None = None
    # source → the dtype most of its entries are stored in (what `bf16-unchanged` means depends)
    dtypes: dict[str, str] = field(default_factory=dict)

    def delta_total(self, label: str) -> DeltaSums:
        total = DeltaSums()
        for (lab, _, _), s in self.sums.items():
            if lab == label:
                total.add(s)
        return total

    def grouped(self, label: str, by: str) -> dict[object, DeltaSums]:
        """Sums of one delta grouped by "module", "layer" or "layer_module"."""
        return _grouped(self.sums, label, by, DeltaSums)

    def pair_grouped(self, key: str, by: str) -> dict[object, PairSums]:
        """Sums of one pair grouped by "total", "module", "layer" or "layer_module"."""
        return _grouped(self.pair_sums, key, by, PairSums)


def _grouped(sums: dict, owner: str, by: str, new: type) -> dict:
    # groups in the order their first entry was recorded; each sum added in recording order
    out: dict = {}
    for (o, layer, module), s in sums.items():
        if o != owner:
            continue
        g = {"total": "total", "module": module, "layer": layer, "layer_module": (layer, module)}
        out.setdefault(g[by], new()).add(s)
    return out


def pair_key(a: str, b: str) -> str:
    return f"{a}_vs_{b}"


def check_device(device: str | torch.device) -> torch.device:
    """The torch device for the rank math; ConfigError for an unknown or absent device."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r}: not a torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r}: expected cpu or cuda")
    return dev


def _nonfinite_error(name: str, base: Checkpoint, ft: Checkpoint, count: int) -> CheckpointError:
    for ckpt in (ft, base):
        info = ckpt.info(name)
        for start, stop in row_chunks(*matrix_shape(info.shape), 2**24):
            if not torch.isfinite(ckpt.read_f32(name, start, stop)).all():
                return CheckpointError(f"{info.path}: tensor {name!r} holds NaN or Inf values")
    return CheckpointError(
        f"{ft.file_of(name)}: tensor {name!r}: the delta to the base {base.file_of(name)} has "
        f"{count} NaN/Inf entries (overflow)"
    )


def _group(deltas: Sequence[DeltaInput]) -> list[list[DeltaInput]]:
    groups: dict[str, list[DeltaInput]] = {}
    for d in deltas:
        groups.setdefault(str(d.base.path.resolve()), []).append(d)
    return list(groups.values())


def analyze(
    deltas: Sequence[DeltaInput],
    params: AnalyzeDeltasParams | None = None,
    progress: bool = True,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> Analysis:
    """Analyse deltas; those sharing a base directory are read together and compared pairwise.

    `include`/`exclude`: regular expressions (`re.search`) on tensor names; only tensors matching
    any `include` (every tensor when none is given) and no `exclude` are read (NoTensorMatches
    when none is). `device`: where the rank math (SVD, randomized sketch) of each tensor runs;
    sums and histograms stay on the CPU.
    """
    from tqdm.auto import tqdm

    params = params or AnalyzeDeltasParams()
    dev = check_device(device)
    compile_patterns(include, "include")
    compile_patterns(exclude, "exclude")
    filtered = bool(include or exclude)
    labels = [d.label for d in deltas]
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"delta labels must be unique, got {labels}")
    groups = _group(deltas)
    result = Analysis(
        params=params,
        deltas={d.label: {"base": d.base.source, "finetuned": d.finetuned.source} for d in deltas},
        dtypes={c.source: c.main_dtype for d in deltas for c in (d.base, d.finetuned)},
        pairs={
            pair_key(a.label, b.label): (a.label, b.label)
            for g in groups
            for i, a in enumerate(g)
            for b in g[i + 1 :]
        },
    )
    plans = []
    for group in groups:
        paired = [pair_tensors(d.base, d.finetuned) for d in group]
        names = list(dict.fromkeys(n for p in paired for n in p))
        for d, p in zip(group, paired, strict=True):
            skipped = [n for n in d.base.tensors if n not in p]
            if skipped:
                result.skipped[d.label] = skipped
        plans.append((group, paired, names))
    if filtered:  # before any tensor is read: only headers so far
        n_all = len({n for _, _, names in plans for n in names})
        plans = [(g, p, select_names(names, include, exclude)) for g, p, names in plans]
        n_sel = len({n for _, _, names in plans for n in names})
        if n_sel == 0:
            raise NoTensorMatches(n_all, include or [], exclude or [])
        result.selected = {
            "include": list(include or []),
            "exclude": list(exclude or []),
            "tensors": n_sel,
            "of": n_all,
        }
    total = sum(group[0].base.info(n).nbytes for group, _, names in plans for n in names)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="analyze", disable=not progress)
    for group, paired, names in plans:
        buffers = [Buffer() for _ in range(len(group) + 1)]  # W and each Δ, reused
        for name in names:
            bar.set_postfix_str(name[-40:], refresh=False)
            paired_rows = [p.get(name, False) for p in paired]
            _analyze_tensor(name, group, paired_rows, params, result, buffers, dev)
            bar.update(group[0].base.info(name).nbytes)
    bar.close()
    return result


def _analyze_tensor(
    name: str,
    group: Sequence[DeltaInput],
    resized: Sequence[int | bool | None],
    params: AnalyzeDeltasParams,
    result: Analysis,
    buffers: Sequence[Buffer],
    device: torch.device | None = None,
) -> None:
    base = group[0].base
    shape = base.info(name).shape
    view, tensor_units = units(name, shape)
    rows, cols = view
    # shared rows per delta (resized vocabularies compare the shared rows); False: not paired
    members = [(d, r) for d, r in zip(group, resized, strict=True) if r is not False]
    if not members:
        return
    shared = [rows if r is None else min(rows, r) for _, r in members]
    src = Source(
        name, base, [d.finetuned for d, _ in members], view, shared, params.chunk_elements, buffers
    )
    labels = [d.label for d, _ in members]
    m = len(members)
    sums = {(u, j): DeltaSums(n_tensors=1) for u in tensor_units for j in range(m)}
    hists = {(u, j): np.zeros(1 << 16, dtype=np.int64) for u in tensor_units for j in range(m)}
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    psums = {(u, i, j): PairSums() for u in tensor_units for i, j in pairs}
    scratch = Scratch()

    # pass 1: sums, histograms, dense pairwise sums
    for _, w, ds in src:
        for u in tensor_units:
            wu = part(w, u)
            parts = [None if d is None else part(d, u) for d in ds]
            for j, du in enumerate(parts):
                if du is not None:
                    update_sums(
                        sums[u, j], hists[u, j], du, wu[: du.shape[0]], params.atol, scratch
                    )
            for i, j in pairs:
                if parts[i] is not None and parts[j] is not None:
                    r = min(parts[i].shape[0], parts[j].shape[0])
                    update_pair(psums[u, i, j], parts[i][:r], parts[j][:r])
    for (_, j), h in hists.items():
        bad = int(h[NONFINITE_BIN:].sum())
        if bad:
            raise _nonfinite_error(name, base, members[j][0].finetuned, bad)

    # pass 2: exact thresholds (second level, only for tensors whose bucket needs it)
    def delta_chunks(u: Unit, j: int) -> Iterator[torch.Tensor]:
        for _, _, ds in src:
            if ds[j] is not None:
                yield part(ds[j], u)

    thresholds: dict[tuple[Unit, int], tuple[Threshold, Threshold]] = {}
    for (u, j), h in hists.items():
        n = sums[u, j].n
        thresholds[u, j] = tuple(
            threshold_from_histogram(h, topk_count(n, ratio), lambda u=u, j=j: delta_chunks(u, j))
            for ratio in (params.energy_top_fraction, params.top_ratio)
        )

    # pass 3: energy in the top entries, sparse pairwise sums
    builders = {key: (MaskBuilder(t1), MaskBuilder(t2)) for key, (t1, t2) in thresholds.items()}
    for _, _, ds in src:
        for u in tensor_units:
            parts = [None if d is None else part(d, u) for d in ds]
            masks: list[np.ndarray | None] = []
            for j, du in enumerate(parts):
                if du is None:
                    masks.append(None)
                    continue
                top, sparse = builders[u, j]
                flat = du.reshape(-1).numpy()
                sums[u, j].energy_top += sumsq(np.compress(top(du).reshape(-1).numpy(), flat))
                mask = sparse(du).reshape(-1).numpy()
                sums[u, j].energy_sparse += sumsq(np.compress(mask, flat))
                masks.append(mask)
            for i, j in pairs:
                if parts[i] is not None and parts[j] is not None:
                    r = min(parts[i].shape[0], parts[j].shape[0])
                    n = r * parts[i].shape[1]
                    update_pair_sparse(
                        psums[u, i, j], parts[i][:r], parts[j][:r], masks[i][:n], masks[j][:n]
                    )

    # pass 4: ranks of 2-D deltas
    if params.rank:
        rank_pass(src, tensor_units, sums, params, device)

    # records
    for u in tensor_units:
        for j, label in enumerate(labels):
            s = sums[u, j]
            result.sums.setdefault((label, u.layer, u.module), DeltaSums()).add(s)
            hist = result.histograms.setdefault((label, u.module), np.zeros(1 << 16, np.int64))
            hist += hists[u, j]
            metrics = s.metrics(math.nan)
            del metrics["energy_share"]  # needs the model total: added by the report
            result.tensors.append(
                {"delta": label, "tensor": u.name, "layer": u.layer, "module": u.module}
                | {"shape": "x".join(map(str, shape))}
                | metrics
                | {"n_params": s.n, "threshold_sparse": thresholds[u, j][1].value}
            )
        for i, j in pairs:
            key = pair_key(labels[i], labels[j])
            result.pair_sums.setdefault((key, u.layer, u.module), PairSums()).add(psums[u, i, j])
            result.pair_tensors.append(
                {"pair": key, "tensor": u.name, "layer": u.layer, "module": u.module}
                | psums[u, i, j].metrics()
            )
    for j, (d, r) in enumerate(members):
        if r is not None and r != rows:
            extra = _extra_rows_norm(d.finetuned, name, rows, r, cols, params.chunk_elements)
            result.resized.setdefault(d.label, {})[name] = {
                "rows_base": float(rows),
                "rows_finetuned": float(r),
                "shared_rows": float(shared[j]),
                "extra_rows_norm": extra,
            }


def _extra_rows_norm(
    ft: Checkpoint, name: str, base_rows: int, ft_rows: int, cols: int, chunk: int
) -> float:
    """‖rows the finetuned model added beyond the base‖ (0 when it has fewer rows)."""
    total = 0.0
    for start, stop in row_chunks(max(ft_rows - base_rows, 0), cols, chunk):
        off = base_rows * cols
        total += sum_squares(ft.read_f32(name, off + start, off + stop))
    return math.sqrt(total)
