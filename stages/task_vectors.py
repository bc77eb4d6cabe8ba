"""task_vectors@<cond>-<seed>: sparse τ_sft = sft_gsm8k − sft_tulu and τ_rlvr = rlvr − sft_tulu.

Exact top-k per tensor (`task_vectors.top_ratio`, one ratio or one per vector), optional
norm-preserving rescale → vectors/<cond>/seed<seed>/{sft,rlvr}.safetensors; metrics: energy kept,
sign conflict and overlap of the two sparse vectors, their magnitude ratio.
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.merging.compare import compare_vectors, pair_metrics
from deltalab.merging.vectors import TaskVector, build_task_vectors
from deltalab.models import configure_torch
from deltalab.search.params import VECTORS
from deltalab.tensors.reader import Checkpoint


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg = params.task_vectors
    triple = params.study.task_vectors
    base = Checkpoint(paths.checkpoint(cond, seed, triple.base))
    sources = {v: Checkpoint(paths.checkpoint(cond, seed, getattr(triple, v))) for v in VECTORS}
    ratios = {v: cfg.ratio(v) for v in VECTORS}
    with atomic_dir(paths.vectors(cond, seed)) as tmp:
        for ratio in dict.fromkeys(ratios.values()):  # vectors of one ratio: one pass over the base
            targets = [
                (sources[v], tmp / f"{v}.safetensors") for v in VECTORS if ratios[v] == ratio
            ]
            build_task_vectors(base, targets, ratio, cfg.rescale, cfg.values_dtype)
        stats = compare_vectors(*(TaskVector(tmp / f"{v}.safetensors") for v in VECTORS))
    metrics = pair_metrics(stats, VECTORS, ratios, cfg.rescale)
    stage.finish(
        paths.dots_metrics("vectors", cond, seed),
        metrics,
        f"{cond}/seed{seed}: energy kept "
        + ", ".join(f"{v} {metrics[v]['energy_kept']:.3f}" for v in VECTORS)
        + f"; sign conflict {stats['sign_conflict']:.3f}; norm ratio {stats['norm_ratio']:.2f} "
        f"(dense {stats['dense_norm_ratio']:.2f})",
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
