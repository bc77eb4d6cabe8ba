"""merge@<cond>-<seed>: the merged checkpoint, evaluated beside its references.

Scales: the search's chosen point; `merge.scale_sft` / `merge.scale_rlvr` replace it when set.
Method: `merge.method`, with the parameters the search searched (`search.method_ranges`) at their
chosen values.
Writes base + scale_sft·τ_sft + scale_rlvr·τ_rlvr → models/<cond>/seed<seed>/merged/ (a normal HF
checkpoint), then answers the GSM8K test questions with the merged model, the sparse merge at
(1, 1) and the dense merge at (1, 1) (in memory) and compares each, paired, with the better of
sft_gsm8k and rlvr on the same questions → metrics/merge/<cond>-<seed>.json,
reports/merge/<cond>-<seed>/ (predictions).
"""

from dataclasses import asdict

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.evaluation.params import EvaluateParams
from deltalab.evaluation.scoring import evaluate_model, load_gsm8k, write_predictions
from deltalab.merging.disk import merge
from deltalab.merging.method_spec import RANDOM
from deltalab.models import configure_torch
from deltalab.schema.study import made_by
from deltalab.search.live_model import open_live_model
from deltalab.search.merged import (
    apply_merge,
    chosen_method,
    chosen_scales,
    compare_with_references,
    dense_vectors,
)
from deltalab.search.params import VECTORS


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg, member = params.merge, paths.member(cond, seed)
    search = paths.dots_metrics("search", cond, seed)
    scales, source = chosen_scales(cfg, search, f"search@{member}")
    method_params, searched = chosen_method(cfg, search)
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
        method=cfg.method,
        method_params=method_params,
    )

    eval_cfg = EvaluateParams(  # GSM8K only, as evaluate answers it (probes: evaluate_track)
        max_new_tokens=params.evaluate.max_new_tokens,
        batch_size=params.evaluate.batch_size,
        probes=False,
    )

    def answers() -> list[dict]:
        return evaluate_model(lm.engine, rows, None, eval_cfg).predictions

    predictions = {}
    if cfg.method == "task_arithmetic":
        lm.apply(scales)  # the sparse vectors, streamed: the search's own merge
    else:
        apply_merge(lm.engine, lm.base, lm.vectors, scales, cfg.method, method_params)
    predictions[merged] = answers()
    lm.apply([1.0, 1.0])
    predictions["sparse_1_1"] = answers()
    sparsity = params.task_vectors.top_ratio
    with dense_vectors(lm.base, sources, paths.vectors(cond, seed).parent) as dense:
        apply_merge(lm.engine, lm.base, dense, [1.0, 1.0])
        predictions["dense_1_1"] = answers()
        for method in cfg.references:  # the field's methods at the search's sparsity
            vectors = dense if method in RANDOM else lm.vectors
            apply_merge(lm.engine, lm.base, vectors, [1.0, 1.0], method,
                        cfg.reference_params(method, sparsity))  # fmt: skip
            predictions[f"{method}_1_1"] = answers()

    references = {named[v]: paths.predictions(cond, seed, named[v]) for v in VECTORS}
    result = compare_with_references(predictions, references, cfg)
    result["scales"] = {"scale_sft": scales[0], "scale_rlvr": scales[1], "source": source}
    if cfg.method != "task_arithmetic":
        result["method"] = {"name": cfg.method, **asdict(method_params), "searched": searched}
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
