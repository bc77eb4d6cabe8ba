"""Additive sums of deltas (`DeltaSums`, `PairSums`), the metrics derived from them, and the
kernels that add one block of a tensor to them.

Every field is additive (or a max), so the sums of row chunks, tensors, modules, layers and models
are all built by `add`; the metrics are ratios of the sums, taken once at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from deltalab.tensors.blocks import BLOCK, sum_squares
from deltalab.tensors.topk import bincount

BF16_REL = 2.0**-9  # |Δ| ≤ 2⁻⁹·|W|: at most half a bf16 ulp of W, so bf16 storage rounds it away


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


# ---------------------------------------------------------------------------------------------
# Kernels: one row chunk of one delta (or of two deltas of one base) added to the sums


class Scratch:
    """Work buffers of one block, reused by every `update_sums` call of a tensor."""

    def __init__(self) -> None:
        self.a = np.empty(BLOCK, dtype=np.float32)
        self.w = np.empty(BLOCK, dtype=np.float32)
        self.m = np.empty(BLOCK, dtype=np.bool_)
        self.i = torch.empty(BLOCK, dtype=torch.int32)


def update_sums(
    s: DeltaSums, hist: np.ndarray, d: torch.Tensor, w: torch.Tensor, atol: float, b: Scratch
) -> None:
    """Add delta `d` of base `w` to `s` and its |Δ| bit patterns (top 16 bits) to `hist`."""
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


def sumsq(a: np.ndarray) -> float:
    """Σ a² of a float32 array, summed like every other sum of squares here."""
    return sum_squares(torch.from_numpy(a))


def update_pair(p: PairSums, a: torch.Tensor, b: torch.Tensor) -> None:
    """Add the dense comparison of deltas `a` and `b` (same shape) to `p`."""
    an, bn = a.reshape(-1).numpy(), b.reshape(-1).numpy()
    p.n += an.size
    p.dot += float(np.dot(an.astype(np.float64), bn.astype(np.float64)))
    p.a2 += sum_squares(a)
    p.b2 += sum_squares(b)
    prod = np.sign(an) * np.sign(bn)
    p.agree += int(np.count_nonzero(prod > 0))
    p.both += int(np.count_nonzero(prod))


def update_pair_sparse(
    p: PairSums, a: torch.Tensor, b: torch.Tensor, ma: np.ndarray, mb: np.ndarray
) -> None:
    """Add the comparison of `a` and `b` kept by their top-k masks `ma`, `mb` to `p`."""
    an, bn = a.reshape(-1).numpy(), b.reshape(-1).numpy()
    both = ma & mb
    p.a2_s += sumsq(np.compress(ma, an))  # np.compress: ~3x faster than an[ma]
    p.b2_s += sumsq(np.compress(mb, bn))
    ab, bb = np.compress(both, an), np.compress(both, bn)
    p.dot_s += float(np.dot(ab.astype(np.float64), bb.astype(np.float64)))
    prod = np.sign(ab) * np.sign(bb)
    p.agree_s += int(np.count_nonzero(prod > 0))
    p.both_s += int(np.count_nonzero(prod))
    p.inter += int(np.count_nonzero(both))
    p.union += int(np.count_nonzero(ma | mb))
