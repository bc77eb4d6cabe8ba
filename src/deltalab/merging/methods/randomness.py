"""Seeded uniforms that are the same on every device: a counter-based generator (SplitMix64 of
the element index offset by a key hash) in integer arithmetic, which CPU and CUDA compute alike,
where `torch.rand`/`torch.bernoulli` give each device its own stream (mergekit's DARE cannot be
reproduced across devices for that reason)."""

from __future__ import annotations

import hashlib

import torch

_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # SplitMix64's multipliers as signed int64
_M2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)


def key_offset(seed: int, key: str) -> int:
    """A 63-bit stream offset for (seed, key), e.g. (merge seed, "tensor name/vector index")."""
    digest = hashlib.sha256(f"deltalab-merge:{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic: it would copy the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniforms(
    seed: int, key: str, numel: int, start: int = 0, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """float32 uniforms in [0, 1) for elements start .. start + numel of the stream (seed, key):
    any slice of a tensor draws the numbers the whole tensor would."""
    x = torch.arange(start, start + numel, dtype=torch.int64, device=device)
    x.add_(key_offset(seed, key)).mul_(_GOLDEN)  # int64 arithmetic wraps alike everywhere
    x.bitwise_xor_(_shr(x, 30)).mul_(_M1)
    x.bitwise_xor_(_shr(x, 27)).mul_(_M2)
    x.bitwise_xor_(_shr(x, 31))
    return _shr(x, 40).to(torch.float32).mul_(1.0 / (1 << 24))  # 24 bits: exact in float32


def uniforms_reference(seed: int, key: str, indices: list[int]) -> list[float]:
    """The same numbers with Python integers (mod 2**64): the test's independent reference."""
    mask = (1 << 64) - 1
    out = []
    for i in indices:
        x = ((i + key_offset(seed, key)) * 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        x = x ^ (x >> 31)
        out.append((x >> 40) / (1 << 24))
    return out
