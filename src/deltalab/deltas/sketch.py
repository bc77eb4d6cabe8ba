"""Ranks of 2-D deltas: exact singular values when small, a randomized range sketch otherwise,
and the stable / effective ranks derived from them (pass 4 of the analysis of a tensor)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

from deltalab.deltas.accumulators import DeltaSums
from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.deltas.streaming import Source, Unit, part


class Sketch:
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


def sketch_steps(power_iters: int) -> list[str]:
    """The passes over the rows: Y, then (Z, Y) per power iteration, then B."""
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


def rank_pass(
    src: Source,
    units: Sequence[Unit],
    sums: dict[tuple[Unit, int], DeltaSums],
    params: AnalyzeDeltasParams,
    device: torch.device | None = None,
) -> None:
    """Stable and effective ranks of every 2-D unit of every delta of `src`, into `sums`."""
    sketches: dict[tuple[Unit, int], Sketch] = {}
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
            svals = torch.linalg.svdvals(part(ds[j], u).to(device)).cpu()
            stable, effective = ranks(svals, float((svals**2).sum()), min_dim)
            s.n_rank, s.stable_rank, s.effective_rank = 1, stable, effective
            s.effective_rank_frac = effective / min_dim
        else:
            seed = params.seed + zlib.crc32(u.name.encode())
            sketches[u, j] = Sketch(rows, cols, params.rank_sketch_size, seed, device)
    for step in sketch_steps(params.rank_power_iters) if sketches else []:
        for r0, _, ds in src:
            for (u, j), sk in sketches.items():
                if ds[j] is not None:
                    sk.update(step, r0, part(ds[j], u))
        for sk in sketches.values():
            sk.finish(step)
    for (u, j), sk in sketches.items():
        s = sums[u, j]
        min_dim = min(s.n // sk.b.shape[1], sk.b.shape[1])
        stable, effective = ranks(sk.singular_values(), s.sum_d2, min_dim)
        s.n_rank, s.stable_rank, s.effective_rank = 1, stable, effective
        s.effective_rank_frac = effective / min_dim
