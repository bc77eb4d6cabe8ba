"""task_vectors@<cond>-<seed>: sparse τ_sft = sft_gsm8k − sft_tulu and τ_rlvr = rlvr − sft_tulu.

Exact top-k per tensor (`task_vectors.top_ratio`, one ratio or one per vector), optional
norm-preserving rescale → vectors/<cond>/seed<seed>/{sft,rlvr}.safetensors; metrics: energy kept,
sign conflict and overlap of the two sparse vectors, their magnitude ratio.
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir, write_json
from deltalab.merging.vectors import TaskVector, build_task_vectors, compare_vectors
from deltalab.models import configure_torch
from deltalab.search.params import VECTORS
from deltalab.tensors.reader import Checkpoint

SOURCES = {"sft": "sft_gsm8k", "rlvr": "rlvr"}  # vector name → finetuned checkpoint


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg = params.task_vectors
    base = Checkpoint(paths.checkpoint(cond, seed, "sft_tulu"))
    finetuned = {v: Checkpoint(paths.checkpoint(cond, seed, SOURCES[v])) for v in VECTORS}
    out = paths.vectors(cond, seed)
    with atomic_dir(out) as tmp:
        ratios = {v: cfg.ratio(v) for v in VECTORS}
        groups = {}  # vectors of one ratio share one pass over the base
        for v, ratio in ratios.items():
            groups.setdefault(ratio, []).append(v)
        for ratio, names in groups.items():
            targets = [(finetuned[v], tmp / f"{v}.safetensors") for v in names]
            build_task_vectors(base, targets, ratio, cfg.rescale, cfg.values_dtype)
        stats = compare_vectors(
            TaskVector(tmp / "sft.safetensors"), TaskVector(tmp / "rlvr.safetensors")
        )
    metrics = {
        "sft": {
            "top_ratio": ratios["sft"],
            "energy_kept": stats["energy_kept_a"],
            "norm": stats["norm_a"],
        },
        "rlvr": {
            "top_ratio": ratios["rlvr"],
            "energy_kept": stats["energy_kept_b"],
            "norm": stats["norm_b"],
        },
        "sign_conflict": stats["sign_conflict"],
        "sign_conflict_of_all": stats["sign_conflict_of_all"],
        "overlap": stats["overlap"],
        "norm_ratio_sft_rlvr": stats["norm_ratio"],
        "dense_norm_ratio_sft_rlvr": stats["dense_norm_ratio"],
        "rescale": cfg.rescale,
    }
    write_json(paths.dots_metrics("vectors", cond, seed), metrics)
    print(
        f"{cond}/seed{seed}: energy kept sft {metrics['sft']['energy_kept']:.3f}, rlvr "
        f"{metrics['rlvr']['energy_kept']:.3f}; sign conflict {stats['sign_conflict']:.3f}; "
        f"‖τ_sft‖/‖τ_rlvr‖ {stats['norm_ratio']:.2f} (dense {stats['dense_norm_ratio']:.2f})"
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
