"""search@<cond>-<seed>: multi-objective search over (scale_sft, scale_rlvr), in process.

Every trial sets the live model to base + scale_sft·τ_sft + scale_rlvr·τ_rlvr (no checkpoint
written) and scores answer consistency (maximize) and prompt perplexity (minimize) on the
difficulty-balanced queries. Optuna NSGA-II, seeded; the study lives in `search.storage` (default
a journal file under .deltalab/studies/) so a killed search resumes its finished trials and
`deltalab search --study <name>` workers can join. Outputs: reports/search/<cond>-<seed>/
(trials.csv, pareto.csv, search.png), metrics/plots/search/<cond>-<seed>/ (trials, Pareto) and
metrics/search/<cond>-<seed>.json (the chosen point by `search.select`).
"""

import pandas as pd

from deltalab import paths, stage
from deltalab.atomic import atomic_dir, atomic_file, write_json
from deltalab.errors import DataError
from deltalab.models import configure_torch
from deltalab.search.live_model import open_live_model
from deltalab.search.objectives import SearchObjective
from deltalab.search.plots import plot_search
from deltalab.search.study import (
    PARAMS,
    create_or_load,
    default_storage_path,
    fail_running,
    open_storage,
    optimize,
    redact,
    select,
    study_inputs,
    trials_table,
)


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg = params.search
    member = paths.member(cond, seed)
    queries_file = paths.search_data(cond, seed) / "queries.parquet"
    if not queries_file.is_file():
        raise DataError(f"{queries_file}: not found (run `dvc repro sample_queries@{member}`)")
    questions = list(pd.read_parquet(queries_file)["question"])
    if not questions:
        raise DataError(f"{queries_file}: no queries")
    base_dir = paths.checkpoint(cond, seed, "sft_tulu")
    vector_files = paths.vector_files(cond, seed)
    storage = open_storage(cfg.storage, default_storage_path(member))  # fail before loading
    lm = open_live_model(
        base_dir,
        vector_files,
        runtime=params.runtime,
    )
    inputs = study_inputs(
        member, base_dir, list(zip(vector_files, [v.meta for v in lm.vectors], strict=True)),
        queries_file, cfg,
    )  # fmt: skip
    study = create_or_load(storage, inputs, cfg.seed)
    stale = fail_running(study) if cfg.storage is None else 0
    print(
        f"study {study.study_name} ({len(study.trials)} trials stored, {stale} stale failed); "
        f"more workers: deltalab search --study {study.study_name}"
        + (f" --storage {redact(cfg.storage)}" if cfg.storage else "")
    )
    objective = SearchObjective(lm.model, lm.tokenizer, lm.live, questions, cfg)
    ranges = {p: getattr(cfg, p) for p in PARAMS}
    optimize(study, objective, ranges, cfg.n_trials)

    rows = trials_table(study)
    chosen = select(rows, cfg.select)
    unit = objective([1.0, 1.0])  # the sparse (1, 1) merge, for reference
    references = {"sparse (1, 1)": {"consistency": unit.consistency, "perplexity": unit.perplexity}}
    front = [r for r in rows if r["pareto"]]
    with atomic_dir(paths.member_report("search", cond, seed)) as tmp:
        pd.DataFrame(rows).to_csv(tmp / "trials.csv", index=False)
        pd.DataFrame(front).to_csv(tmp / "pareto.csv", index=False)
        plot_search(rows, chosen, references, tmp / "search.png", f"merge search: {member}")
    plots = paths.EVAL_PLOTS.parent / "search" / member
    with atomic_file(plots / "trials.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    with atomic_file(plots / "pareto.csv") as tmp:
        pd.DataFrame(front).sort_values("perplexity").to_csv(tmp, index=False)
    write_json(
        paths.dots_metrics("search", cond, seed),
        {
            "study": study.study_name,
            "trials": len(rows),
            "pareto_size": len(front),
            "select": cfg.select,
            "chosen": {k: chosen[k] for k in ("trial", *PARAMS, "consistency", "perplexity")},
            "sparse_1_1": references["sparse (1, 1)"],
            "queries": len(questions),
        },
    )
    print(
        f"{member}: {len(rows)} trials, {len(front)} on the Pareto front; chosen trial "
        f"{chosen['trial']}: scale_sft {chosen['scale_sft']:.3f}, scale_rlvr "
        f"{chosen['scale_rlvr']:.3f} (consistency {chosen['consistency']:.3f}, perplexity "
        f"{chosen['perplexity']:.2f}); sparse (1, 1): {references['sparse (1, 1)']}"
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
