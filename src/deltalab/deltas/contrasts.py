"""Head-to-head contrasts of two deltas of one base (a: SFT-like, b: RL-like): the pairwise sums
oriented a → b whatever order the analysis paired them in, and the numbers compared with the
published SFT-vs-RLVR figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from deltalab.deltas.accumulators import PairSums
from deltalab.deltas.analysis import Analysis, pair_key
from deltalab.deltas.classify import module_order
from deltalab.errors import ConfigError


def check_contrast(bases: Mapping[str, str], contrast: Sequence[tuple[str, str]]) -> None:
    """Every contrasted label must be a delta, and both deltas of a contrast must share a base
    (`bases`: label → base name). Raises ConfigError naming the offending labels."""
    for a, b in contrast:
        for label in (a, b):
            if label not in bases:
                raise ConfigError(
                    f"contrast ({a}, {b}): {label!r} is not a delta here "
                    f"(deltas: {', '.join(bases) or 'none'})"
                )
        if bases[a] != bases[b]:
            raise ConfigError(
                f"contrast ({a}, {b}): the deltas have different bases ({bases[a]}, "
                f"{bases[b]}); only deltas of one base are compared head-to-head"
            )


def _swapped(p: PairSums) -> PairSums:
    return PairSums(
        **{f: getattr(p, f) for f in PairSums.__dataclass_fields__}
        | {"a2": p.b2, "b2": p.a2, "a2_s": p.b2_s, "b2_s": p.a2_s}
    )


def oriented_pair(analysis: Analysis, a: str, b: str, by: str = "total") -> dict:
    """PairSums of deltas a and b (grouped like `Analysis.pair_grouped`), with a as the
    numerator of the magnitude ratios whichever order the analysis paired them in."""
    if pair_key(a, b) in analysis.pairs:
        return analysis.pair_grouped(pair_key(a, b), by)
    if pair_key(b, a) in analysis.pairs:
        return {k: _swapped(v) for k, v in analysis.pair_grouped(pair_key(b, a), by).items()}
    bases = {label: d["base"] for label, d in analysis.deltas.items()}
    check_contrast(bases, [(a, b)])
    raise ConfigError(f"contrast ({a}, {b}): the two deltas were not read together")


def contrast_metrics(p: PairSums, top_ratio: float) -> dict[str, float]:
    """Head-to-head numbers of two deltas a, b of one base (a: SFT-like, b: RL-like)."""

    def ratio(x: float, y: float) -> float:
        return x / y if y > 0 else math.nan

    return {
        "norm_a": math.sqrt(p.a2),
        "norm_b": math.sqrt(p.b2),
        "magnitude_ratio": ratio(math.sqrt(p.a2), math.sqrt(p.b2)),
        "magnitude_ratio_sparse": ratio(math.sqrt(p.a2_s), math.sqrt(p.b2_s)),
        "cosine": ratio(p.dot, math.sqrt(p.a2 * p.b2)),
        "cosine_sparse": ratio(p.dot_s, math.sqrt(p.a2_s * p.b2_s)),
        "opposite_sign": ratio(p.both - p.agree, p.n),
        "opposite_sign_sparse": ratio(p.both_s - p.agree_s, p.n),
        "opposite_sign_of_both": ratio(p.both - p.agree, p.both),
        "opposite_sign_of_both_sparse": ratio(p.both_s - p.agree_s, p.both_s),
        "both_nonzero": ratio(p.both, p.n),
        "both_kept": ratio(p.inter, p.n),
        "mask_jaccard": ratio(p.inter, p.union),
        "mask_jaccard_random": top_ratio / (2 - top_ratio),
    }


def active_contrast(analysis: Analysis) -> list[tuple[str, str]]:
    """The configured contrasts whose two labels were both analysed (the stage and the CLI
    check them strictly with `check_contrast`; a library call with other labels skips them)."""
    return [(a, b) for a, b in analysis.params.contrast if {a, b} <= set(analysis.deltas)]


def contrasts(analysis: Analysis) -> dict[str, dict]:
    """`a_vs_b` → {"a", "b", "total": contrast metrics, "modules": {module: metrics}}."""
    out = {}
    rho = analysis.params.top_ratio
    for a, b in active_contrast(analysis):
        total = oriented_pair(analysis, a, b).get("total", PairSums())
        modules = oriented_pair(analysis, a, b, "module")
        out[pair_key(a, b)] = {
            "a": a,
            "b": b,
            "total": contrast_metrics(total, rho),
            "modules": {m: contrast_metrics(modules[m], rho) for m in module_order(modules)},
        }
    return out
