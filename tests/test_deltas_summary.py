"""The one traversal of an Analysis: the views it feeds agree, and its orderings."""

from __future__ import annotations

import math

from deltalab.deltas.summary import DeltaSummary, PairSummary


def _delta(by_module: dict, by_layer: dict | None = None) -> DeltaSummary:
    return DeltaSummary(
        sources={"base": "b", "finetuned": "f"},
        method=None,
        sum_d2=1.0,
        total={},
        by_module=by_module,
        by_layer=by_layer or {},
        by_layer_module={},
        resized={},
        skipped=[],
    )


def test_modules_and_layers_are_shown_in_canonical_order():
    d = _delta({"lm_head": {}, "mlp_up": {}, "attn_q": {}}, {1: {}, None: {}, 0: {}})
    assert list(d.modules) == ["attn_q", "mlp_up", "lm_head"]
    assert list(d.layers) == [None, 0, 1]
    p = PairSummary("a", "b", {}, {"norm": {}, "embedding": {}}, {})
    assert list(p.modules) == ["embedding", "norm"]


def test_top_groups_rank_by_value_and_keep_ties_in_the_order_met():
    d = _delta(
        {
            "mlp_up": {"energy_share": 0.25},
            "attn_q": {"energy_share": 0.25},  # a tie: mlp_up was met first
            "norm": {"energy_share": 0.5},
            "lm_head": {"energy_share": 0.0},  # not positive: never a top group
            "other": {"energy_share": math.nan},
        }
    )
    assert d.top("module", "energy_share") == [("norm", 0.5), ("mlp_up", 0.25), ("attn_q", 0.25)]
    assert d.top("module", "energy_share", n=1) == [("norm", 0.5)]
