"""difficulty@<cond>-<seed>: how hard each pool query is for the sparse vectors.

Each sparse vector alone on the base (scale 1) answers every query of the search pool
(data/prepared/search/pool.jsonl: no stage trains on it, no evaluation uses it) `votes` times;
consistency = share of the most common answer (0 when that is "no answer"), difficulty = 1 − mean
consistency over the two models; queries above `difficulty.threshold` are marked dropped →
data/search/<cond>/seed<seed>/difficulty.parquet (per-query details), metrics/difficulty/.
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_file, write_json
from deltalab.evaluation.scoring import load_gsm8k
from deltalab.models import configure_torch
from deltalab.search.live_model import open_live_model
from deltalab.search.params import VECTORS
from deltalab.search.queries import difficulty_table, vote


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg = params.difficulty
    pool = load_gsm8k(paths.SEARCH_POOL, limit=cfg.pool_limit)
    lm = open_live_model(
        paths.checkpoint(cond, seed, "sft_tulu"),
        paths.vector_files(cond, seed),
        runtime=params.runtime,
    )
    questions = [row["question"] for row in pool]
    answers = {}
    for i, name in enumerate(VECTORS):  # each vector alone: scales (1, 0) and (0, 1)
        lm.live.apply([1.0 if j == i else 0.0 for j in range(len(VECTORS))])
        answers[name] = vote(lm.model, lm.tokenizer, questions, cfg, desc=f"votes {name}")
    table = difficulty_table(pool, answers, cfg.threshold)
    with atomic_file(paths.search_data(cond, seed) / "difficulty.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    kept = table[table["kept"]]
    metrics = {
        "pool": len(table),
        "kept": len(kept),
        "threshold": cfg.threshold,
        "mean_difficulty": float(table["difficulty"].mean()),
        "consistency": {v: float(table[f"consistency_{v}"].mean()) for v in VECTORS},
        # for inspection only (the search never sees gold answers)
        "majority_accuracy": {
            v: float((table[f"majority_{v}"] == table["gold"]).mean()) for v in VECTORS
        },
    }
    write_json(paths.dots_metrics("difficulty", cond, seed), metrics)
    print(
        f"{cond}/seed{seed}: {len(kept)} of {len(table)} queries kept (difficulty ≤ "
        f"{cfg.threshold}); consistency sft {metrics['consistency']['sft']:.3f}, "
        f"rlvr {metrics['consistency']['rlvr']:.3f}"
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
