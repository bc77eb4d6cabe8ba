"""difficulty@<cond>-<seed>: how hard each pool query is for the sparse vectors.

Each sparse vector alone on the base (scale 1) answers every query of the search pool
(data/prepared/search/pool.jsonl: no stage trains on it, no evaluation uses it) `votes` times;
consistency = share of the most common answer (0 when that is "no answer"), difficulty = 1 − mean
consistency over the two models; queries above `difficulty.threshold` are marked dropped →
data/search/<cond>/seed<seed>/difficulty.parquet (per-query details), metrics/difficulty/.
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_file
from deltalab.evaluation.scoring import load_gsm8k
from deltalab.models import configure_torch
from deltalab.search.live_model import open_live_model
from deltalab.search.params import VECTORS
from deltalab.search.queries import difficulty_metrics, difficulty_table
from deltalab.search.voting import vote


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg = params.difficulty
    pool = load_gsm8k(paths.SEARCH_POOL, limit=cfg.pool_limit)
    lm = open_live_model(
        stage.checkpoint(cond, seed, params.study.task_vectors.base),
        paths.vector_files(cond, seed, VECTORS),
        runtime=params.runtime,
    )
    questions = [row["question"] for row in pool]
    answers = {}
    for i, name in enumerate(VECTORS):  # each vector alone: scales (1, 0) and (0, 1)
        lm.apply([1.0 if j == i else 0.0 for j in range(len(VECTORS))])
        answers[name] = vote(lm.engine, questions, cfg, desc=f"votes {name}")
    table = difficulty_table(pool, answers, cfg.threshold)
    with atomic_file(paths.difficulty_table(cond, seed)) as tmp:
        table.to_parquet(tmp, index=False)
    metrics = difficulty_metrics(table, cfg.threshold, VECTORS)
    stage.finish(
        paths.dots_metrics("difficulty", cond, seed),
        metrics,
        f"{cond}/seed{seed}: {metrics['kept']} of {metrics['pool']} queries kept (difficulty ≤ "
        f"{cfg.threshold}); consistency "
        + ", ".join(f"{v} {c:.3f}" for v, c in metrics["consistency"].items()),
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
