"""What each merge method is called, which parameters it reads and what they may be, importable
without torch: the CLI's choices and the params schema validate here, `merging.methods` computes."""

from __future__ import annotations

from dataclasses import dataclass

# name -> the MethodParams fields it reads
READS: dict[str, tuple[str, ...]] = {
    "task_arithmetic": (),
    "ties": ("density", "normalize"),
    "dare_linear": ("density", "seed"),
    "dare_ties": ("density", "normalize", "seed"),
    "della_linear": ("density", "epsilon", "seed"),
    "della": ("density", "epsilon", "normalize", "seed"),
    "breadcrumbs": ("density", "gamma"),
    "breadcrumbs_ties": ("density", "gamma", "normalize"),
    "ram": ("epsilon",),
}
METHOD_NAMES = tuple(READS)
RANDOM = frozenset({"dare_linear", "dare_ties", "della_linear", "della"})  # seeded drops
# TIES-style methods: mergekit's defaults for dividing by the agreeing scales
NORMALIZE_DEFAULT = {"ties": True, "della": True, "dare_ties": False, "breadcrumbs_ties": False}


@dataclass(frozen=True)
class MethodParams:
    """Every method's parameters (each method reads its own; `check` refuses the rest)."""

    density: float = 1.0  # share of entries kept (ties, dare, della, breadcrumbs)
    gamma: float = 0.01  # breadcrumbs: share of largest-magnitude outliers dropped
    epsilon: float = 0.15  # della: keep-probability spread; ram: |τ| that counts as a change
    normalize: bool = True  # TIES-style methods: divide by the agreeing scales (disjoint mean)
    seed: int = 0  # dare, della: the drops' seed


def check(name: str, params: MethodParams) -> None:
    """A clear ValueError naming the method and the parameter that cannot work."""
    if name not in READS:
        raise ValueError(f"unknown merge method {name!r} (one of {', '.join(METHOD_NAMES)})")
    reads = READS[name]
    if "density" in reads and not 0.0 < params.density <= 1.0:
        raise ValueError(f"{name}: density must be in (0, 1], got {params.density}")
    if "gamma" in reads and not 0.0 <= params.gamma < 1.0 - params.density + 1e-12:
        raise ValueError(
            f"{name}: gamma + density must be <= 1 (outliers and kept entries are disjoint), "
            f"got gamma {params.gamma}, density {params.density}"
        )
    if name.startswith("della") and not (
        params.density - params.epsilon > 0.0 and params.density + params.epsilon <= 1.0
    ):
        raise ValueError(
            f"{name}: density ± epsilon must lie in (0, 1], got density {params.density}, "
            f"epsilon {params.epsilon}"
        )
    if name == "ram" and params.epsilon < 0:
        raise ValueError(f"ram: epsilon must be >= 0, got {params.epsilon}")
