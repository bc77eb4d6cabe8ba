"""merge@<cond>-<seed>: the merged checkpoint, evaluated beside its references.

Scales: the search's chosen point; `merge.scale_sft` / `merge.scale_rlvr` replace it when set.
Writes base + scale_sft·τ_sft + scale_rlvr·τ_rlvr → models/<cond>/seed<seed>/merged/ (a normal HF
checkpoint), then answers the GSM8K test questions with the merged model, the sparse merge at
(1, 1) and the dense merge at (1, 1) (in memory) and compares each, paired, with the better of
sft_gsm8k and rlvr on the same questions → metrics/merge/<cond>-<seed>.json,
reports/merge/<cond>-<seed>/ (predictions).
"""

import json
import tempfile
from pathlib import Path

from deltalab import paths, stage
from deltalab.atomic import atomic_dir, write_json
from deltalab.errors import DataError
from deltalab.evaluation.params import EvaluateParams
from deltalab.evaluation.scoring import evaluate_model, load_gsm8k, write_predictions
from deltalab.merging.disk import merge
from deltalab.merging.live import LiveMerge
from deltalab.merging.vectors import TaskVector, build_task_vectors
from deltalab.models import configure_torch
from deltalab.search.live_model import open_live_model
from deltalab.search.merged import compare_with_references
from deltalab.search.params import VECTORS
from deltalab.tensors.reader import Checkpoint

REFERENCES = ("sft_gsm8k", "rlvr")  # the single models the merge must beat


def chosen_scales(params, cond: str, seed: int) -> tuple[list[float], str]:
    """The search's chosen point, each scale replaced by `merge.<scale>` when that is set."""
    overrides = params.merge.overrides()
    if len(overrides) == 2:
        return [overrides["scale_sft"], overrides["scale_rlvr"]], "params"
    source = paths.dots_metrics("search", cond, seed)
    if not source.is_file():
        raise DataError(f"{source}: not found (run `dvc repro search@{cond}-{seed}`)")
    chosen = json.loads(source.read_text())["chosen"] | overrides
    origin = f"search trial {chosen['trial']}"
    if overrides:
        origin += " with " + ", ".join(f"{k} from params" for k in overrides)
    return [chosen["scale_sft"], chosen["scale_rlvr"]], origin


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg, runtime = params.merge, params.runtime
    scales, source = chosen_scales(params, cond, seed)
    rows = load_gsm8k(paths.DATA / "gsm8k/test.jsonl", limit=params.evaluate.gsm8k_limit)
    references = {m: paths.predictions(cond, seed, m) for m in REFERENCES}
    base_dir = paths.checkpoint(cond, seed, "sft_tulu")
    vector_files = paths.vector_files(cond, seed)
    lm = open_live_model(
        base_dir,
        vector_files,
        runtime=runtime,
    )
    pairs = list(zip(lm.vectors, scales, strict=True))
    merge(lm.base, pairs, paths.checkpoint(cond, seed, "merged"), dtype=cfg.dtype)

    eval_cfg = EvaluateParams(  # GSM8K only, as evaluate answers it (probes: evaluate_track)
        max_new_tokens=params.evaluate.max_new_tokens,
        batch_size=params.evaluate.batch_size,
        probes=False,
    )
    predictions = {}
    for name, s in {"merged": scales, "sparse_1_1": [1.0, 1.0]}.items():
        lm.live.apply(s)
        predictions[name] = evaluate_model(lm.model, lm.tokenizer, rows, None, eval_cfg).predictions
    with tempfile.TemporaryDirectory(dir=paths.vectors(cond, seed).parent) as tmp:
        dense = [Path(tmp) / f"{v}.safetensors" for v in VECTORS]
        targets = [
            (Checkpoint(paths.checkpoint(cond, seed, m)), p)
            for m, p in zip(REFERENCES, dense, strict=True)
        ]
        build_task_vectors(lm.base, targets, 1.0, progress=False)
        LiveMerge(lm.model, lm.base, [TaskVector(p) for p in dense]).apply([1.0, 1.0])
        predictions["dense_1_1"] = evaluate_model(
            lm.model, lm.tokenizer, rows, None, eval_cfg
        ).predictions
    result = compare_with_references(predictions, references, cfg)
    result["scales"] = {"scale_sft": scales[0], "scale_rlvr": scales[1], "source": source}
    with atomic_dir(paths.dots_report("merge", cond, seed)) as tmp:
        for name, records in predictions.items():
            write_predictions(tmp / f"{name}.jsonl", records)
    write_json(paths.dots_metrics("merge", cond, seed), result)
    acc = result["accuracy"]
    print(
        f"{cond}/seed{seed}: merged at ({scales[0]:.3f}, {scales[1]:.3f}) [{source}]: GSM8K "
        + ", ".join(f"{k} {v:.3f}" for k, v in acc.items())
    )
    for name, test in result["vs_best_single"].items():
        print(
            f"  {name} − {result['best_single']}: {test['difference']:+.3f} "
            f"[{test['questions_ci_low']:+.3f}, {test['questions_ci_high']:+.3f}], "
            f"McNemar p = {test['mcnemar_p']:.3g}"
        )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
