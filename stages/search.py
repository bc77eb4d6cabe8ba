"""search@<cond>-<seed>: multi-objective search over (scale_sft, scale_rlvr), in process.

Every trial sets the live model to base + scale_sft·τ_sft + scale_rlvr·τ_rlvr (no checkpoint
written; merged by `merge.method`, with the parameters in `search.method_ranges` searched beside
the scales) and scores answer consistency (maximize) and prompt perplexity (minimize) on the
difficulty-balanced queries. Optuna NSGA-II, seeded; the study lives in `search.storage` (default
a journal file under .deltalab/studies/) so a killed search resumes its finished trials and
`deltalab search --study <name>` workers can join. Outputs: reports/search/<cond>-<seed>/
(trials.csv, pareto.csv, search.png), metrics/plots/search/<cond>-<seed>/ (trials, Pareto) and
metrics/search/<cond>-<seed>.json (the chosen point by `search.select`).
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.merging.method_spec import MethodParams
from deltalab.models import configure_torch
from deltalab.search.live_model import open_live_model
from deltalab.search.objectives import SearchObjective
from deltalab.search.params import VECTORS, trial_method
from deltalab.search.plots import plot_search
from deltalab.search.queries import load_queries
from deltalab.search.study import (
    default_storage_path,
    open_search_study,
    open_storage,
    optimize,
    search_metrics,
    select,
    study_inputs,
    trials_table,
    write_trials,
)


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg = params.search
    member = paths.member(cond, seed)
    queries_file = paths.queries(cond, seed)
    questions = load_queries(queries_file, member)
    base_dir = stage.checkpoint(cond, seed, params.study.task_vectors.base)
    vector_files = paths.vector_files(cond, seed, VECTORS)
    storage = open_storage(cfg.storage, default_storage_path(member), cfg.heartbeat)  # early
    # the trials merge as the merged checkpoint will (merge.method and its parameters)
    fixed = MethodParams(
        density=params.merge.density, gamma=params.merge.gamma, epsilon=params.merge.epsilon,
        normalize=params.merge.normalize, seed=params.merge.method_seed,
    )  # fmt: skip
    method = trial_method(cfg, params.merge.method, fixed)  # None: task arithmetic, scales only
    lm = open_live_model(base_dir, vector_files, runtime=params.runtime,
                         method=params.merge.method, method_params=fixed)  # fmt: skip
    metas = list(zip(vector_files, [v.meta for v in lm.vectors], strict=True))
    inputs = study_inputs(member, base_dir, metas, queries_file, cfg, method)
    study = open_search_study(storage, inputs, cfg)
    objective = SearchObjective(lm.engine, lm.apply, questions, cfg)
    optimize(study, objective, inputs.ranges, cfg.n_trials)

    rows = trials_table(study)
    chosen = select(rows, cfg.select)
    unit = objective([1.0, 1.0])  # the sparse (1, 1) merge (the method as set), for reference
    sparse_1_1 = {"consistency": unit.consistency, "perplexity": unit.perplexity}
    with atomic_dir(paths.member_report("search", cond, seed)) as tmp:
        write_trials(rows, tmp, paths.member_plots("search", cond, seed))
        plot_search(
            rows,
            chosen,
            {"sparse (1, 1)": sparse_1_1},
            tmp / "search.png",
            f"merge search: {member}",
        )
    metrics = search_metrics(
        study, rows, chosen, {"sparse_1_1": sparse_1_1}, len(questions), cfg.select, method
    )
    stage.finish(
        paths.dots_metrics("search", cond, seed),
        metrics,
        f"{member}: {len(rows)} trials, {metrics['pareto_size']} on the Pareto front; chosen "
        f"trial {chosen['trial']}: scale_sft {chosen['scale_sft']:.3f}, scale_rlvr "
        f"{chosen['scale_rlvr']:.3f} (consistency {chosen['consistency']:.3f}, perplexity "
        f"{chosen['perplexity']:.2f}); sparse (1, 1): {sparse_1_1}",
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
