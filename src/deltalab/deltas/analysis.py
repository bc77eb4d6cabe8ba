"""How post-training moved the weights: per-tensor, then per layer × module, statistics of deltas.

Every tensor is streamed from the checkpoints (one tensor, or one row chunk of a huge tensor, at a
time, in fp32), so an 8B model is analysed in the memory of its largest chunk. Deltas that share a
base are read together and compared with each other (cosine, sign agreement, magnitude ratio)
before and after keeping their top `top_ratio` entries.

Passes over one tensor (re-reading row chunks from disk only when it does not fit one chunk):
1. sums (‖Δ‖², ‖W‖², zeros, |Δ| ≤ atol, bf16-relative), max |Δ|, a histogram of |Δ| bit patterns
   and the pairwise sums;
2. the second level of the exact top-k thresholds (top 1% energy, sparsification);
3. masks at those thresholds: energy in the top entries and the sparse pairwise sums;
4. for 2-D deltas, singular values (exact SVD when small, randomized sketch otherwise).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from deltalab.deltas.classify import MODULES, classify, fused_parts
from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.errors import CheckpointError, ConfigError
from deltalab.tensors.blocks import (
    BLOCK,
    BlockReader,
    delta_into,
    f32_into,
    matrix_shape,
    row_chunks,
    sum_squares,
)
from deltalab.tensors.pairing import pair_tensors
from deltalab.tensors.reader import Buffer, Checkpoint
from deltalab.tensors.topk import (
    NONFINITE_BIN,
    MaskBuilder,
    Threshold,
    bincount,
    threshold_from_histogram,
    topk_count,
)

BF16_REL = 2.0**-9  # |Δ| ≤ 2⁻⁹·|W|: at most half a bf16 ulp of W, so bf16 storage rounds it away


@dataclass
class DeltaInput:
    """One delta to analyse: `finetuned − base`, reported under `label`."""

    label: str
    base: Checkpoint
    finetuned: Checkpoint


@dataclass(frozen=True)
class _Unit:
    name: str  # display name; parts of a fused tensor get a [q]/[k]/[v] suffix
    tensor: str
    layer: int | None
    module: str
    cols: tuple[int, int] | None  # column slice of the (rows, cols) view
    is_matrix: bool


# ---------------------------------------------------------------------------------------------
# Additive accumulators and the metrics derived from them


@dataclass
class DeltaSums:
    """Additive sums of one delta over a set of entries (a tensor, a module, a layer, a model)."""

    n: int = 0
    sum_d2: float = 0.0
    sum_w2: float = 0.0
    max_abs: float = 0.0
    n_zero: int = 0
    n_atol: int = 0
    n_bf16: int = 0
    energy_top: float = 0.0
    energy_sparse: float = 0.0
    n_tensors: int = 0
    n_rank: int = 0
    stable_rank: float = 0.0
    effective_rank: float = 0.0
    effective_rank_frac: float = 0.0

    def add(self, other: DeltaSums) -> None:
        for f in self.__dataclass_fields__:
            if f == "max_abs":
                self.max_abs = max(self.max_abs, other.max_abs)
            else:
                setattr(self, f, getattr(self, f) + getattr(other, f))

    def metrics(self, total_d2: float) -> dict[str, float]:
        n, d2 = max(self.n, 1), self.sum_d2
        return {
            "n_params": float(self.n),
            "norm": math.sqrt(d2),
            "rel_norm": math.sqrt(d2 / self.sum_w2) if self.sum_w2 > 0 else math.nan,
            "rms": math.sqrt(d2 / n),
            "max_abs": self.max_abs,
            "frac_zero": self.n_zero / n,
            "frac_unchanged_atol": self.n_atol / n,
            "frac_unchanged_bf16": self.n_bf16 / n,
            "energy_share": d2 / total_d2 if total_d2 > 0 else math.nan,
            "energy_top_share": self.energy_top / d2 if d2 > 0 else math.nan,
            "energy_kept_sparse": self.energy_sparse / d2 if d2 > 0 else math.nan,
            "stable_rank": self.stable_rank / self.n_rank if self.n_rank else math.nan,
            "effective_rank": self.effective_rank / self.n_rank if self.n_rank else math.nan,
            "effective_rank_frac": (
                self.effective_rank_frac / self.n_rank if self.n_rank else math.nan
            ),
        }


@dataclass
class PairSums:
    """Additive sums comparing two deltas of the same base, dense and after sparsification."""

    n: int = 0
    dot: float = 0.0
    a2: float = 0.0
    b2: float = 0.0
    agree: int = 0
    both: int = 0
    dot_s: float = 0.0
    a2_s: float = 0.0
    b2_s: float = 0.0
    agree_s: int = 0
    both_s: int = 0
    inter: int = 0
    union: int = 0

    def add(self, other: PairSums) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def metrics(self) -> dict[str, float]:
        def ratio(a: float, b: float) -> float:
            return a / b if b > 0 else math.nan

        return {
            "cosine": ratio(self.dot, math.sqrt(self.a2 * self.b2)),
            "sign_agreement": ratio(self.agree, self.both),
            "magnitude_ratio": ratio(math.sqrt(self.a2), math.sqrt(self.b2)),
            "cosine_sparse": ratio(self.dot_s, math.sqrt(self.a2_s * self.b2_s)),
            "sign_agreement_sparse": ratio(self.agree_s, self.both_s),
            "magnitude_ratio_sparse": ratio(math.sqrt(self.a2_s), math.sqrt(self.b2_s)),
            "mask_jaccard": ratio(self.inter, self.union),
        }


@dataclass
class Analysis:
    """Everything `analyze` measured; `deltalab.deltas.report` turns it into files."""

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

    def delta_total(self, label: str) -> DeltaSums:
        total = DeltaSums()
        for (lab, _, _), s in self.sums.items():
            if lab == label:
                total.add(s)
        return total

    def grouped(self, label: str, by: str) -> dict:
        """Sums of one delta grouped by "module", "layer" or "layer_module"."""
        out: dict = {}
        for (lab, layer, module), s in self.sums.items():
            if lab != label:
                continue
            key = {"module": module, "layer": layer, "layer_module": (layer, module)}[by]
            out.setdefault(key, DeltaSums()).add(s)
        return out

    def pair_grouped(self, key: str, by: str) -> dict:
        out: dict = {}
        for (k, layer, module), s in self.pair_sums.items():
            if k != key:
                continue
            g = {
                "total": "total",
                "module": module,
                "layer": layer,
                "layer_module": (layer, module),
            }
            out.setdefault(g[by], PairSums()).add(s)
        return out


# ---------------------------------------------------------------------------------------------
# Streaming one tensor of a group of deltas that share a base


class _Source:
    """Row chunks of one tensor: base W and each delta Δ_j (fp32, rows × cols; Δ_j is None or
    has fewer rows where its checkpoint has fewer rows), built block by block into `buffers`
    (reused from tensor to tensor: fresh memory page-faults). A single chunk is read once and
    cached."""

    def __init__(
        self,
        name: str,
        base: Checkpoint,
        finetuned: Sequence[Checkpoint],
        view: tuple[int, int],
        shared_rows: Sequence[int],
        chunk_elements: int,
        buffers: Sequence[Buffer],
    ) -> None:
        self.name, self.base, self.finetuned = name, base, finetuned
        self.rows, self.cols = view
        self.shared_rows = list(shared_rows)
        self.ranges = row_chunks(self.rows, self.cols, chunk_elements)
        self._cache: tuple | None = None
        self._bufs = buffers
        self._readers = (BlockReader(), BlockReader())

    @property
    def single(self) -> bool:
        return len(self.ranges) == 1

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, list[torch.Tensor | None]]]:
        if self._cache is not None:
            yield self._cache
            return
        for start, stop in self.ranges:
            r0, r1 = start // self.cols, stop // self.cols
            w = self._bufs[0].get(4 * (stop - start)).view(torch.float32)
            f32_into(self.base, self.name, start, stop, w, self._readers[0])
            ds: list[torch.Tensor | None] = []
            for j, (ft, shared) in enumerate(zip(self.finetuned, self.shared_rows, strict=True)):
                rows = max(0, min(r1, shared) - r0)
                if rows == 0:
                    ds.append(None)
                    continue
                end = start + rows * self.cols
                d = self._bufs[j + 1].get(4 * (end - start)).view(torch.float32)
                delta_into(self.base, ft, self.name, start, end, end, d, self._readers)
                ds.append(d.view(rows, self.cols))
            item = (r0, w.view(r1 - r0, self.cols), ds)
            if self.single:
                self._cache = item
            yield item


def _part(t: torch.Tensor, unit: _Unit) -> torch.Tensor:
    return t if unit.cols is None else t[:, unit.cols[0] : unit.cols[1]].contiguous()


class _Scratch:
    def __init__(self) -> None:
        self.a = np.empty(BLOCK, dtype=np.float32)
        self.w = np.empty(BLOCK, dtype=np.float32)
        self.m = np.empty(BLOCK, dtype=np.bool_)
        self.i = torch.empty(BLOCK, dtype=torch.int32)


def _update_sums(
    s: DeltaSums, hist: np.ndarray, d: torch.Tensor, w: torch.Tensor, atol: float, b: _Scratch
) -> None:
    df, wf = d.reshape(-1), w.reshape(-1)
    s.n += df.numel()
    for start in range(0, df.numel(), BLOCK):
        db, wb = df[start : start + BLOCK], wf[start : start + BLOCK]
        m = db.numel()
        dn, wn = db.numpy(), wb.numpy()
        a, mask = b.a[:m], b.m[:m]
        np.abs(dn, out=a)
        s.sum_d2 += sum_squares(db)
        s.sum_w2 += sum_squares(wb)
        s.max_abs = max(s.max_abs, float(a.max()))
        s.n_zero += m - int(np.count_nonzero(dn))
        s.n_atol += int(np.count_nonzero(np.less_equal(a, atol, out=mask)))
        wa = np.abs(wn, out=b.w[:m])
        wa *= BF16_REL
        s.n_bf16 += int(np.count_nonzero(np.less_equal(a, wa, out=mask)))
        hist += (
            np.bincount(a.view(np.int32) >> 15, minlength=1 << 16)
            if m < 1 << 15
            else bincount(
                torch.bitwise_right_shift(torch.from_numpy(a).view(torch.int32), 15, out=b.i[:m]),
                1 << 16,
            )
        )


def _sumsq(a: np.ndarray) -> float:
    return sum_squares(torch.from_numpy(a))


def _update_pair(p: PairSums, a: torch.Tensor, b: torch.Tensor) -> None:
    an, bn = a.reshape(-1).numpy(), b.reshape(-1).numpy()
    p.n += an.size
    p.dot += float(np.dot(an.astype(np.float64), bn.astype(np.float64)))
    p.a2 += sum_squares(a)
    p.b2 += sum_squares(b)
    prod = np.sign(an) * np.sign(bn)
    p.agree += int(np.count_nonzero(prod > 0))
    p.both += int(np.count_nonzero(prod))


def _update_pair_sparse(
    p: PairSums, a: torch.Tensor, b: torch.Tensor, ma: np.ndarray, mb: np.ndarray
) -> None:
    an, bn = a.reshape(-1).numpy(), b.reshape(-1).numpy()
    both = ma & mb
    p.a2_s += _sumsq(np.compress(ma, an))  # np.compress: ~3x faster than an[ma]
    p.b2_s += _sumsq(np.compress(mb, bn))
    ab, bb = np.compress(both, an), np.compress(both, bn)
    p.dot_s += float(np.dot(ab.astype(np.float64), bb.astype(np.float64)))
    prod = np.sign(ab) * np.sign(bb)
    p.agree_s += int(np.count_nonzero(prod > 0))
    p.both_s += int(np.count_nonzero(prod))
    p.inter += int(np.count_nonzero(both))
    p.union += int(np.count_nonzero(ma | mb))


# ---------------------------------------------------------------------------------------------
# Rank: exact singular values when small, a randomized range sketch otherwise


class _Sketch:
    """Randomized SVD (Halko et al.) of a row-streamed matrix: Y = ΔΩ, q power iterations,
    B = QᵀΔ, σ(B) ≈ the top singular values of Δ. Each step is one pass over the rows."""

    def __init__(
        self, rows: int, cols: int, size: int, seed: int, device: torch.device | None = None
    ) -> None:
        self.l = min(size + 10, rows, cols)  # 10 oversamples
        self.size = min(size, self.l)
        self.device = device
        gen = torch.Generator().manual_seed(seed)  # drawn on the CPU: same Ω on every device
        self.omega = torch.randn(cols, self.l, generator=gen).to(device)
        self.y = torch.zeros(rows, self.l, device=device)
        self.q: torch.Tensor | None = None
        self.z = torch.zeros(cols, self.l, device=device)
        self.b = torch.zeros(self.l, cols, device=device)

    def update(self, step: str, r0: int, d: torch.Tensor) -> None:
        r1 = r0 + d.shape[0]
        d = d.to(self.device)
        if step == "y":
            self.y[r0:r1] = d @ self.omega
        elif step == "z":
            self.z += d.T @ self.q[r0:r1]
        else:
            self.b += self.q[r0:r1].T @ d

    def finish(self, step: str) -> None:
        if step == "y":
            self.q = torch.linalg.qr(self.y).Q
        elif step == "z":
            self.omega = torch.linalg.qr(self.z).Q
            self.z.zero_()

    def singular_values(self) -> torch.Tensor:
        return torch.linalg.svdvals(self.b)[: self.size].cpu()


def _sketch_steps(power_iters: int) -> list[str]:
    return ["y"] + ["z", "y"] * power_iters + ["b"]


def ranks(svals: torch.Tensor, fro2: float, min_dim: int) -> tuple[float, float]:
    """(stable rank ‖Δ‖²_F/σ₁², effective rank exp(H(σ/Σσ))) from the top singular values.

    When `svals` holds fewer than `min_dim` values (a sketch), the energy not explained by them is
    spread evenly over the remaining min_dim − r singular values (a flat-tail estimate).
    """
    s = svals.double().clamp_min(0)
    if fro2 <= 0 or s.numel() == 0 or s[0] <= 0:
        return 0.0, 0.0
    stable = fro2 / float(s[0]) ** 2
    rest = min_dim - s.numel()
    tail = max(fro2 - float((s**2).sum()), 0.0)
    sigma_t = math.sqrt(tail / rest) if rest > 0 and tail > 0 else 0.0
    total = float(s.sum()) + rest * sigma_t
    p = s[s > 0] / total
    entropy = -float((p * p.log()).sum())
    if sigma_t > 0:
        pt = sigma_t / total
        entropy -= rest * pt * math.log(pt)
    return min(stable, float(min_dim)), math.exp(entropy)


# ---------------------------------------------------------------------------------------------
# The driver


def _units(name: str, shape: tuple[int, ...]) -> tuple[tuple[int, int], list[_Unit]]:
    loc = classify(name)
    parts = fused_parts(name, shape)
    if parts:
        view = (1, shape[0]) if len(shape) == 1 else matrix_shape(shape)
        return view, [
            _Unit(f"{name}[{suffix}]", name, loc.layer, module, (c0, c1), len(shape) >= 2)
            for suffix, module, c0, c1 in parts
        ]
    return matrix_shape(shape), [_Unit(name, name, loc.layer, loc.module, None, len(shape) >= 2)]


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


def compile_patterns(patterns: Sequence[str] | None, flag: str) -> list[re.Pattern]:
    out = []
    for pat in patterns or []:
        try:
            out.append(re.compile(pat))
        except re.error as exc:
            raise ConfigError(f"{flag} {pat!r}: invalid regular expression ({exc})") from exc
    return out


def select_names(
    names: Sequence[str], include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[str]:
    """Names that `re.search` any `include` (all names when none is given) and no `exclude`."""
    inc, exc = compile_patterns(include, "--include"), compile_patterns(exclude, "--exclude")
    return [
        n
        for n in names
        if (not inc or any(p.search(n) for p in inc)) and not any(p.search(n) for p in exc)
    ]


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
    any `include` (every tensor when none is given) and no `exclude` are read. `device`: where the
    rank math (SVD, randomized sketch) of each tensor runs; sums and histograms stay on the CPU.
    """
    from tqdm.auto import tqdm

    params = params or AnalyzeDeltasParams()
    dev = check_device(device)
    compile_patterns(include, "--include")
    compile_patterns(exclude, "--exclude")
    filtered = bool(include or exclude)
    labels = [d.label for d in deltas]
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"delta labels must be unique, got {labels}")
    groups = _group(deltas)
    result = Analysis(
        params=params,
        deltas={d.label: {"base": d.base.source, "finetuned": d.finetuned.source} for d in deltas},
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
            raise ConfigError(
                f"no tensor of {n_all} matches --include {list(include or [])} "
                f"--exclude {list(exclude or [])}"
            )
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
    view, units = _units(name, shape)
    rows, cols = view
    # shared rows per delta (resized vocabularies compare the shared rows); False: not paired
    members = [(d, r) for d, r in zip(group, resized, strict=True) if r is not False]
    if not members:
        return
    shared = [rows if r is None else min(rows, r) for _, r in members]
    src = _Source(
        name, base, [d.finetuned for d, _ in members], view, shared, params.chunk_elements, buffers
    )
    labels = [d.label for d, _ in members]
    m = len(members)
    sums = {(u, j): DeltaSums(n_tensors=1) for u in units for j in range(m)}
    hists = {(u, j): np.zeros(1 << 16, dtype=np.int64) for u in units for j in range(m)}
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    psums = {(u, i, j): PairSums() for u in units for i, j in pairs}
    scratch = _Scratch()

    # pass 1: sums, histograms, dense pairwise sums
    for _, w, ds in src:
        for u in units:
            wu = _part(w, u)
            parts = [None if d is None else _part(d, u) for d in ds]
            for j, du in enumerate(parts):
                if du is not None:
                    _update_sums(
                        sums[u, j], hists[u, j], du, wu[: du.shape[0]], params.atol, scratch
                    )
            for i, j in pairs:
                if parts[i] is not None and parts[j] is not None:
                    r = min(parts[i].shape[0], parts[j].shape[0])
                    _update_pair(psums[u, i, j], parts[i][:r], parts[j][:r])
    for (_, j), h in hists.items():
        bad = int(h[NONFINITE_BIN:].sum())
        if bad:
            raise _nonfinite_error(name, base, members[j][0].finetuned, bad)

    # pass 2: exact thresholds (second level, only for tensors whose bucket needs it)
    def delta_chunks(u: _Unit, j: int) -> Iterator[torch.Tensor]:
        for _, _, ds in src:
            if ds[j] is not None:
                yield _part(ds[j], u)

    thresholds: dict[tuple[_Unit, int], tuple[Threshold, Threshold]] = {}
    for (u, j), h in hists.items():
        n = sums[u, j].n
        thresholds[u, j] = tuple(
            threshold_from_histogram(h, topk_count(n, ratio), lambda u=u, j=j: delta_chunks(u, j))
            for ratio in (params.energy_top_fraction, params.top_ratio)
        )

    # pass 3: energy in the top entries, sparse pairwise sums
    builders = {key: (MaskBuilder(t1), MaskBuilder(t2)) for key, (t1, t2) in thresholds.items()}
    for _, _, ds in src:
        for u in units:
            parts = [None if d is None else _part(d, u) for d in ds]
            masks: list[np.ndarray | None] = []
            for j, du in enumerate(parts):
                if du is None:
                    masks.append(None)
                    continue
                top, sparse = builders[u, j]
                flat = du.reshape(-1).numpy()
                sums[u, j].energy_top += _sumsq(np.compress(top(du).reshape(-1).numpy(), flat))
                mask = sparse(du).reshape(-1).numpy()
                sums[u, j].energy_sparse += _sumsq(np.compress(mask, flat))
                masks.append(mask)
            for i, j in pairs:
                if parts[i] is not None and parts[j] is not None:
                    r = min(parts[i].shape[0], parts[j].shape[0])
                    n = r * parts[i].shape[1]
                    _update_pair_sparse(
                        psums[u, i, j], parts[i][:r], parts[j][:r], masks[i][:n], masks[j][:n]
                    )

    # pass 4: ranks of 2-D deltas
    if params.rank:
        _ranks_of(src, units, sums, params, device)

    # records
    for u in units:
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


def _ranks_of(
    src: _Source,
    units: Sequence[_Unit],
    sums: dict[tuple[_Unit, int], DeltaSums],
    params: AnalyzeDeltasParams,
    device: torch.device | None = None,
) -> None:
    sketches: dict[tuple[_Unit, int], _Sketch] = {}
    for (u, j), s in sums.items():
        if not u.is_matrix or s.n == 0:
            continue
        cols = src.cols if u.cols is None else u.cols[1] - u.cols[0]
        rows = s.n // cols
        min_dim = min(rows, cols)
        if min_dim < 2:
            continue
        if src.single and min_dim <= params.rank_exact_max_dim:
            _, _, ds = next(iter(src))
            svals = torch.linalg.svdvals(_part(ds[j], u).to(device)).cpu()
            stable, effective = ranks(svals, float((svals**2).sum()), min_dim)
            s.n_rank, s.stable_rank, s.effective_rank = 1, stable, effective
            s.effective_rank_frac = effective / min_dim
        else:
            seed = params.seed + zlib.crc32(u.name.encode())
            sketches[u, j] = _Sketch(rows, cols, params.rank_sketch_size, seed, device)
    for step in _sketch_steps(params.rank_power_iters) if sketches else []:
        for r0, _, ds in src:
            for (u, j), sk in sketches.items():
                if ds[j] is not None:
                    sk.update(step, r0, _part(ds[j], u))
        for sk in sketches.values():
            sk.finish(step)
    for (u, j), sk in sketches.items():
        s = sums[u, j]
        min_dim = min(s.n // sk.b.shape[1], sk.b.shape[1])
        stable, effective = ranks(sk.singular_values(), s.sum_d2, min_dim)
        s.n_rank, s.stable_rank, s.effective_rank = 1, stable, effective
        s.effective_rank_frac = effective / min_dim


def _extra_rows_norm(
    ft: Checkpoint, name: str, base_rows: int, ft_rows: int, cols: int, chunk: int
) -> float:
    """‖rows the finetuned model added beyond the base‖ (0 when it has fewer rows)."""
    total = 0.0
    for start, stop in row_chunks(max(ft_rows - base_rows, 0), cols, chunk):
        off = base_rows * cols
        total += sum_squares(ft.read_f32(name, off + start, off + stop))
    return math.sqrt(total)


def module_order(modules: Sequence[str]) -> list[str]:
    return [m for m in MODULES if m in set(modules)]
