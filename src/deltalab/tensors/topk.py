"""Exact top-k by magnitude: exactly k entries, ties broken by the lowest flat index.

The k-th largest |x| is found with a two-level histogram over the IEEE-754 bit pattern of |x|
(for non-negative floats the int32 bit pattern orders like the value): the top 16 bits pick the
bucket that holds the k-th value, the low 15 bits of the entries in that bucket pick the value.
Each level is one pass of `abs` + shift + `bincount` over cache-sized blocks, so the extra memory is
two block buffers plus the output mask, and the whole search is O(n) rather than a sort.

A threshold with `>=` would overshoot on bf16 deltas, where many entries share a value (and when
most deltas are exactly zero the threshold is 0 and everything is kept); here the entries strictly
above the threshold are kept and the remainder is filled from the entries equal to it in flat-index
order. Everything works on a stream of chunks, so a tensor larger than memory can be processed in
row chunks (see `deltalab.tensors.blocks.row_chunks`); chunk order defines the flat-index order.

NaN counts as larger than any finite value (its bit pattern is); callers reject non-finite deltas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from deltalab.tensors.blocks import BLOCK
from deltalab.tensors.blocks import SMALL as _SMALL

_HI_SHIFT = 15
_HI_BINS = 1 << 16  # |x| bits are < 2**31: the top 16 bits of the 31
_LO_BINS = 1 << 15
NONFINITE_BIN = 0x7F800000 >> _HI_SHIFT  # first top-level bucket of inf/NaN
MAX_CANDIDATES = 1 << 22  # above this, the second level counts instead of sorting


def topk_count(numel: int, ratio: float) -> int:
    """k for a keep ratio: round(ratio · n), at least one entry of a non-empty tensor."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"top ratio must be in (0, 1], got {ratio}")
    if numel == 0:
        return 0
    return min(numel, max(1, round(ratio * numel)))


@dataclass(frozen=True)
class Threshold:
    """Keep entries whose |x| bit pattern is > `bits`, plus the first `ties` entries equal to it."""

    bits: int
    ties: int
    k: int

    @property
    def value(self) -> float:
        """The cut as a float: between the (k+1)-th and the k-th largest |x|, both included
        (0.0 when nothing or everything is kept)."""
        if self.k == 0 or self.bits < 0:
            return 0.0
        return torch.tensor(self.bits, dtype=torch.int32).view(torch.float32).item()


def _blocks(chunks: Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
    for chunk in chunks:
        yield from chunk.reshape(-1).split(BLOCK)


class _Buffers:
    """Reusable block-sized scratch buffers (fresh allocations would page-fault every block)."""

    def __init__(self) -> None:
        self.f = torch.empty(BLOCK, dtype=torch.float32)
        self.i = torch.empty(BLOCK, dtype=torch.int32)
        self.m = torch.empty(BLOCK, dtype=torch.bool)

    def abs_bits(self, block: torch.Tensor) -> torch.Tensor:
        m = block.numel()
        out = self.f[:m]
        if block.dtype == torch.float32:
            torch.abs(block, out=out)
        else:
            out.copy_(block).abs_()
        return out.view(torch.int32)


def bincount(x: torch.Tensor, bins: int) -> np.ndarray:
    """Counts of the values of an int32 tensor in [0, bins) as an int64 numpy array.

    Small inputs go to numpy: torch's kernels start OpenMP regions whose cost dominates tiny
    tensors (and explodes when other processes compete for the cores).
    """
    if x.numel() < _SMALL:
        return np.bincount(x.numpy(), minlength=bins)
    return torch.bincount(x, minlength=bins).numpy()


def histogram_hi(chunks: Iterable[torch.Tensor], buffers: _Buffers | None = None) -> np.ndarray:
    """Counts of the top 16 bits of |x| (65,536 log-spaced buckets; the last 256 are inf/NaN)."""
    buf = buffers or _Buffers()
    hist = np.zeros(_HI_BINS, dtype=np.int64)
    for block in _blocks(chunks):
        bits = buf.abs_bits(block)
        m = bits.numel()
        if m < _SMALL:
            hist += np.bincount(bits.numpy() >> _HI_SHIFT, minlength=_HI_BINS)
        else:
            hist += bincount(torch.bitwise_right_shift(bits, _HI_SHIFT, out=buf.i[:m]), _HI_BINS)
    return hist


def _zeros(chunks: Iterable[torch.Tensor]) -> int:
    """Number of exact zeros (numpy's count is a popcount-speed loop for fp32)."""
    zeros = 0
    for block in _blocks(chunks):
        nonzero = (
            np.count_nonzero(block.numpy())
            if block.dtype == torch.float32
            else torch.count_nonzero(block)
        )
        zeros += block.numel() - int(nonzero)
    return zeros


def _locate(hist: np.ndarray, k: int) -> tuple[int, int]:
    """(bucket holding the k-th largest, number of entries in buckets above it)."""
    from_top = np.cumsum(hist[::-1])
    idx = int(np.searchsorted(from_top, k))  # first position with cumulative count >= k
    bucket = hist.size - 1 - idx
    above = int(from_top[idx]) - int(hist[bucket])
    return bucket, above


def threshold_from_histogram(
    hist: np.ndarray,
    k: int,
    chunks: Callable[[], Iterable[torch.Tensor]],
    max_candidates: int = MAX_CANDIDATES,
) -> Threshold:
    """Exact threshold for the k largest |x| given the top-level histogram of `chunks()`.

    `chunks` is called again (at most twice) for the second level over the one bucket that holds
    the k-th value: its entries are gathered and sorted when there are at most `max_candidates`
    (typical: ~0.1% of the tensor), else counted with a histogram of their low 15 bits (heavy
    ties); a bucket 0 made only of exact zeros (sparse deltas) needs just a count of zeros.
    """
    n = int(hist.sum())
    if k <= 0:
        return Threshold(0x7FFFFFFF, 0, 0)
    if k >= n:
        return Threshold(-1, 0, n)
    bucket, above = _locate(hist, k)
    need = k - above
    in_bucket = int(hist[bucket])
    if need == in_bucket:  # the whole bucket is kept: no second pass
        return Threshold((bucket << _HI_SHIFT) - 1, 0, k)
    buf = _Buffers()
    if bucket == 0 and in_bucket > max_candidates and _zeros(chunks()) == in_bucket:
        # bucket 0 holds zeros and denormals; sparse deltas fill it with exact zeros, and one
        # count_nonzero pass is ~15x cheaper than the second-level histogram
        t, greater, equal = 0, above, in_bucket
    elif in_bucket <= max_candidates:
        parts = []
        for block in _blocks(chunks()):
            bits = buf.abs_bits(block)
            m = bits.numel()
            hi = torch.bitwise_right_shift(bits, _HI_SHIFT, out=buf.i[:m]).numpy()
            sel = np.equal(hi, bucket, out=buf.m[:m].numpy())
            parts.append(np.compress(sel, bits.numpy()))
        cand = np.sort(np.concatenate(parts))[::-1]  # descending bit patterns
        t = int(cand[need - 1])
        greater = above + int(np.count_nonzero(cand > t))
        equal = int(np.count_nonzero(cand == t))
    else:
        # offsets of |x| bits from the bucket start, clamped so that everything below the bucket
        # lands in bin 0 and everything above in the last bin (no boolean indexing)
        start = (bucket << _HI_SHIFT) - 1
        counts = np.zeros(_LO_BINS + 2, dtype=np.int64)
        for block in _blocks(chunks()):
            bits = buf.abs_bits(block)
            bits.sub_(start).clamp_(0, _LO_BINS + 1)
            counts += bincount(bits, _LO_BINS + 2)
        lo_hist = counts[1:-1]
        low, above_low = _locate(lo_hist, need)
        t = (bucket << _HI_SHIFT) | low
        greater, equal = above + above_low, int(lo_hist[low])
    ties = k - greater
    if ties == equal:  # every entry equal to the threshold is kept
        return Threshold(t - 1, 0, k)
    return Threshold(t, ties, k)


def find_threshold(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> Threshold:
    """Exact threshold for the k largest |x| over the stream `chunks()` (called 1-3 times)."""
    return threshold_from_histogram(histogram_hi(chunks()), k, chunks)


class MaskBuilder:
    """Turn a Threshold into masks chunk by chunk; chunks must come in flat-index order."""

    def __init__(self, threshold: Threshold) -> None:
        self.threshold = threshold
        self.remaining = threshold.ties
        self._buf = _Buffers()

    def __call__(self, chunk: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        flat = chunk.reshape(-1)
        mask = torch.empty(flat.numel(), dtype=torch.bool) if out is None else out.reshape(-1)
        t = self.threshold.bits
        for start in range(0, flat.numel(), BLOCK):
            block = flat[start : start + BLOCK]
            bits = self._buf.abs_bits(block).numpy()
            m = mask[start : start + block.numel()].numpy()
            # numpy's comparisons are ~10x faster than torch's bool-producing kernels on CPU
            np.greater(bits, t, out=m)
            if self.remaining:
                eq = np.equal(bits, t, out=self._buf.m[: bits.size].numpy())
                count = int(np.count_nonzero(eq))
                if count <= self.remaining:
                    np.logical_or(m, eq, out=m)
                    self.remaining -= count
                else:  # lowest flat indices first
                    m[np.flatnonzero(eq)[: self.remaining]] = True
                    self.remaining = 0
        return mask.view(chunk.shape)


def topk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly min(k, numel) entries of largest |x| (ties: lowest flat index)."""
    flat = x.reshape(-1)
    mask = _sampled_topk_mask(flat, k)
    if mask is None:
        mask = MaskBuilder(find_threshold(lambda: (flat,), k))(flat)
    return mask.view(x.shape)


_SAMPLE = 1 << 16


def _sampled_topk_mask(flat: torch.Tensor, k: int) -> torch.Tensor | None:
    """Top-k of an in-memory tensor in one pass, no histogram.

    A fixed random sample of |x| brackets the k-th value; the pass keeps everything above the
    bracket and gathers the entries inside it, which are resolved exactly afterwards. When the
    sample says the k-th value is one heavily tied value (bf16 deltas: exact zeros, or one
    quantization step), the pass records where that value occurs and the ties are filled from
    the lowest index without a second pass. Rare cases (many distinct values inside the bracket)
    take a second pass from the exact threshold. None when the bracket misses the k-th value: the
    caller then uses the histogram path.
    """
    n = flat.numel()
    if n < 1 << 20 or not 0 < k < n or flat.dtype != torch.float32:
        return None
    gen = torch.Generator().manual_seed(n)  # deterministic
    sample = flat[torch.randint(n, (_SAMPLE,), generator=gen)].abs().view(torch.int32).numpy()
    sample = np.sort(sample)[::-1]  # descending bit patterns
    p = k / n
    margin = int(6 * math.sqrt(_SAMPLE * p * (1 - p))) + 16
    rank = int(p * _SAMPLE)
    hi = int(sample[rank - margin]) if rank - margin >= 0 else 0x7FFFFFFF
    lo = int(sample[rank + margin]) if rank + margin < _SAMPLE else 0
    buf = _Buffers()
    mask = torch.empty(n, dtype=torch.bool)
    mask_np = mask.numpy()
    if lo == hi:
        return mask if _tied_pass(flat, k, hi, mask_np, buf) else None
    budget = max(1 << 16, n // 16)  # candidate indices kept (int64) at most
    cand_idx: list[np.ndarray] | None = []
    cand_bits: list[np.ndarray] = []
    kept_idx = 0
    for start in range(0, n, BLOCK):
        bits = buf.abs_bits(flat[start : start + BLOCK]).numpy()
        m = bits.size
        np.greater(bits, hi, out=mask_np[start : start + m])
        inside = np.greater_equal(bits, lo, out=buf.m[:m].numpy())
        inside &= bits <= hi
        if cand_idx is not None:
            idx = np.flatnonzero(inside)
            kept_idx += idx.size
            if kept_idx <= budget:
                cand_idx.append(idx + start)
                cand_bits.append(bits[idx])
                continue
            cand_idx = None
        cand_bits.append(np.compress(inside, bits))
    greater = int(np.count_nonzero(mask_np))
    need = k - greater
    cbits = np.concatenate(cand_bits)
    if not 0 < need <= cbits.size:
        return None
    t = int(np.partition(cbits, cbits.size - need)[cbits.size - need])  # need-th largest
    greater += int(np.count_nonzero(cbits > t))
    ties = k - greater
    if cand_idx is None:  # many candidates: a second pass from the exact threshold
        return MaskBuilder(Threshold(t, ties, k))(flat)
    cidx = np.concatenate(cand_idx)
    mask_np[cidx[cbits > t]] = True
    mask_np[cidx[np.flatnonzero(cbits == t)[:ties]]] = True  # candidates are in index order
    return mask


def _tied_pass(flat: torch.Tensor, k: int, t: int, mask_np: np.ndarray, buf: _Buffers) -> bool:
    """One pass when the k-th value is (very likely) the tied value t: keep |x| > t, note where
    |x| == t, then keep the lowest-index ties. False if t is not the k-th value after all."""
    n = flat.numel()
    tied = np.empty(n, dtype=np.bool_)  # n bytes: cheaper than a second pass over the tensor
    counts = []
    for start in range(0, n, BLOCK):
        bits = buf.abs_bits(flat[start : start + BLOCK]).numpy()
        m = bits.size
        np.greater(bits, t, out=mask_np[start : start + m])
        counts.append(int(np.count_nonzero(np.equal(bits, t, out=tied[start : start + m]))))
    remaining = k - int(np.count_nonzero(mask_np))
    if not 0 < remaining <= sum(counts):
        return False
    for i, count in enumerate(counts):
        block = slice(i * BLOCK, min((i + 1) * BLOCK, n))
        if count <= remaining:
            np.logical_or(mask_np[block], tied[block], out=mask_np[block])
        else:
            mask_np[i * BLOCK + np.flatnonzero(tied[block])[:remaining]] = True
        remaining -= min(count, remaining)
        if not remaining:
            break
    return True


def topk_mask_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """Sort-based reference for tests: stable descending sort of |x| (float64), first k."""
    flat = x.reshape(-1).double().abs()
    order = torch.sort(flat, descending=True, stable=True).indices[: max(0, k)]
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.view(x.shape)


def energy_above(chunks: Iterable[torch.Tensor], threshold: Threshold) -> float:
    """Σ x² over the k entries selected by `threshold` (ties counted at the threshold value)."""
    total = 0.0
    buf = _Buffers()
    for block in _blocks(chunks):
        bits = buf.abs_bits(block)
        m = bits.numel()
        keep = np.greater(bits.numpy(), threshold.bits, out=buf.m[:m].numpy())
        sel = np.compress(keep, buf.f[:m].numpy())
        if sel.size:
            total += float(np.dot(sel.astype(np.float64), sel.astype(np.float64)))
    return total + (threshold.ties * threshold.value**2 if threshold.ties else 0.0)


def log2_histogram(hist_hi: np.ndarray, per_octave: int = 4) -> tuple[list[float], list[int]]:
    """Collapse a top-level |x| histogram to `per_octave` log2 buckets: (lower edges, counts).

    Zeros and denormals (exponent 0) are dropped, as are inf/NaN; callers report zeros separately.
    """
    shift = 8 - int(math.log2(per_octave))  # a top-level bucket is 8 exponent + 8 mantissa bits
    grouped = np.asarray(hist_hi)[:NONFINITE_BIN].reshape(-1, 1 << shift).sum(1)
    edges, counts = [], []
    for i in range(per_octave, grouped.size):  # i < per_octave: exponent 0 (zero/denormal)
        c = int(grouped[i])
        if c:
            bits = i << (shift + _HI_SHIFT)
            edges.append(torch.tensor(bits, dtype=torch.int32).view(torch.float32).item())
            counts.append(c)
    return edges, counts
