"""The published claims as data: verdict bands at their boundaries and the rules spelled out."""

from __future__ import annotations

import math

import pytest

from deltalab.deltas.claims import CLAIMS

_CLAIM = {c.key: c for c in CLAIMS}


@pytest.mark.parametrize(
    ("key", "value", "verdict"),
    [
        ("magnitude_ratio", 10.0, "holds"),
        ("magnitude_ratio", 100.0, "holds"),
        ("magnitude_ratio", 9.999, "partly"),
        ("magnitude_ratio", 100.001, "partly"),
        ("magnitude_ratio", 2.0, "partly"),
        ("magnitude_ratio", 1.999, "does not hold"),
        ("magnitude_ratio", 1 / 30, "does not hold"),  # the ratio upside down
        ("magnitude_ratio", math.nan, "n/a"),
        ("magnitude_ratio", None, "n/a"),
        ("opposite_sign", 0.35, "holds"),
        ("opposite_sign", 0.55, "holds"),
        ("opposite_sign", 0.3499, "partly"),
        ("opposite_sign", 0.5501, "partly"),
        ("opposite_sign", 0.25, "partly"),
        ("opposite_sign", 0.65, "partly"),
        ("opposite_sign", 0.2499, "does not hold"),
        ("opposite_sign", 0.6501, "does not hold"),
        ("opposite_sign_sparse", 0.0, "holds"),
        ("opposite_sign_sparse", 0.15, "holds"),
        ("opposite_sign_sparse", 0.1501, "partly"),
        ("opposite_sign_sparse", 0.25, "partly"),
        ("opposite_sign_sparse", 0.2501, "does not hold"),
        ("rl_unchanged", 0.70, "holds"),
        ("rl_unchanged", 0.95, "holds"),
        ("rl_unchanged", 0.6999, "partly"),
        ("rl_unchanged", 0.9501, "partly"),
        ("rl_unchanged", 0.5, "partly"),
        ("rl_unchanged", 1.0, "partly"),
        ("rl_unchanged", 0.4999, "does not hold"),
        ("sft_unchanged", 0.06, "holds"),
        ("sft_unchanged", 0.15, "holds"),
        ("sft_unchanged", 0.0599, "partly"),
        ("sft_unchanged", 0.1501, "partly"),
        ("sft_unchanged", 0.5, "partly"),
        ("sft_unchanged", 0.5001, "does not hold"),
        ("rl_rank", 0.5, "holds"),
        ("rl_rank", 1.0, "holds"),
        ("rl_rank", 0.4999, "partly"),
        ("rl_rank", 0.25, "partly"),
        ("rl_rank", 0.2499, "does not hold"),
    ],
)
def test_verdict_boundaries(key, value, verdict):
    assert _CLAIM[key].verdict(value) == verdict


def test_rules_are_spelled_out():
    assert _CLAIM["magnitude_ratio"].rule() == (
        "holds if 10 ≤ x ≤ 100; else partly if x ≥ 2; else does not hold"
    )
    assert _CLAIM["opposite_sign"].rule() == (
        "holds if 35% ≤ x ≤ 55%; else partly if 25% ≤ x ≤ 65%; else does not hold"
    )
    assert _CLAIM["opposite_sign_sparse"].rule().startswith("holds if x ≤ 15%; else partly if")
