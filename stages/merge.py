"""merge@<cond>-<seed>: the merged checkpoint, evaluated beside its references.

Scales: the search's chosen point; `merge.scale_sft` / `merge.scale_rlvr` replace it when set.
Writes base + scale_sft·τ_sft + scale_rlvr·τ_rlvr → models/<cond>/seed<seed>/merged/ (a normal HF
checkpoint), then answers the GSM8K test questions with the merged model, the sparse merge at
(1, 1) and the dense merge at (1, 1) (in memory) and compares each, paired, with the better of
sft_gsm8k and rlvr on the same questions → metrics/merge/<cond>-<seed>.json,
reports/merge/<cond>-<seed>/ (predictions).
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.evaluation.params import EvaluateParams
from deltalab.evaluation.scoring import evaluate_model, load_gsm8k, write_predictions
from deltalab.merging.disk import merge
from deltalab.models import configure_torch
from deltalab.schema.study import made_by
from deltalab.search.live_model import open_live_model
from deltalab.search.merged import apply_dense_merge, chosen_scales, compare_with_references
from deltalab.search.params import VECTORS


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg, member = params.merge, paths.member(cond, seed)
    search = paths.dots_metrics("search", cond, seed)
    scales, source = chosen_scales(cfg, search, f"search@{member}")
    rows = load_gsm8k(paths.dataset("gsm8k", "test"), limit=params.evaluate.gsm8k_limit)
    triple, (merged,) = params.study.task_vectors, made_by(params.study.checkpoints, "merge")
    named = {v: getattr(triple, v) for v in VECTORS}
    sources = [stage.checkpoint(cond, seed, named[v]) for v in VECTORS]
    base_dir = stage.checkpoint(cond, seed, triple.base)
    lm = open_live_model(base_dir, paths.vector_files(cond, seed, VECTORS), runtime=params.runtime)
    merge(
        lm.base,
        list(zip(lm.vectors, scales, strict=True)),
        paths.checkpoint(cond, seed, merged),
        dtype=cfg.dtype,
    )

    eval_cfg = EvaluateParams(  # GSM8K only, as evaluate answers it (probes: evaluate_track)
        max_new_tokens=params.evaluate.max_new_tokens,
        batch_size=params.evaluate.batch_size,
        probes=False,
    )
    predictions = {}
    for name, s in {merged: scales, "sparse_1_1": [1.0, 1.0]}.items():
        lm.apply(s)
        predictions[name] = evaluate_model(lm.engine, rows, None, eval_cfg).predictions
    apply_dense_merge(lm.engine, lm.base, sources, [1.0, 1.0], paths.vectors(cond, seed).parent)
    predictions["dense_1_1"] = evaluate_model(lm.engine, rows, None, eval_cfg).predictions

    references = {named[v]: paths.predictions(cond, seed, named[v]) for v in VECTORS}
    result = compare_with_references(predictions, references, cfg)
    result["scales"] = {"scale_sft": scales[0], "scale_rlvr": scales[1], "source": source}
    with atomic_dir(paths.member_report("merge", cond, seed)) as tmp:
        for name, records in predictions.items():
            write_predictions(tmp / f"{name}.jsonl", records)
    stage.finish(
        paths.dots_metrics("merge", cond, seed),
        result,
        f"{member}: merged at ({scales[0]:.3f}, {scales[1]:.3f}) [{source}]: GSM8K "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items())
        + f"; best single: {result['best_single']}",
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
