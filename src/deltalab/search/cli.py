"""`deltalab search`: another worker joins a merge-search study (another process or machine).

The study records what it was made from (base, vectors and queries, with digests, and the
objective's params); the worker rebuilds the same objective from its own checkout (after
`dvc pull`) and refuses files that differ. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
from pathlib import Path

from deltalab.errors import ConfigError


def _member(study: str) -> str:
    """`dots-<cond>-<seed>-<digest>` → `<cond>-<seed>`."""
    if not study.startswith("dots-") or study.count("-") < 3:
        raise ConfigError(f"--study {study!r}: expected dots-<cond>-<seed>-<digest>")
    return study.removeprefix("dots-").rsplit("-", 1)[0]


def _cmd_search(args: argparse.Namespace) -> int:
    import pandas as pd

    from deltalab.config import load_params
    from deltalab.merging.method_spec import MethodParams
    from deltalab.merging.vectors import TaskVector
    from deltalab.models import configure_torch
    from deltalab.search.live_model import open_live_model
    from deltalab.search.objectives import SearchObjective
    from deltalab.search.params import SearchParams
    from deltalab.search.study import (
        complete_trials,
        default_storage_path,
        file_sha256,
        load_for_worker,
        open_storage,
        optimize,
        vector_digest,
    )

    params = load_params(args.params)
    url = args.storage or params.search.storage
    storage = open_storage(url, default_storage_path(_member(args.study)), params.search.heartbeat)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    study, inputs = load_for_worker(storage, args.study, seed)
    for path, digest in zip(inputs.vectors, inputs.vector_digests, strict=True):
        if not Path(path).is_file() or vector_digest(TaskVector(path).meta) != digest:
            raise ConfigError(
                f"{path}: missing or not the vector study {args.study} was made from "
                "(check out that revision and `dvc pull`)"
            )
    if not Path(inputs.queries).is_file() or file_sha256(inputs.queries) != inputs.queries_digest:
        raise ConfigError(f"{inputs.queries}: missing or not the queries of study {args.study}")
    configure_torch(params.runtime)
    cfg = SearchParams(**(params.search.model_dump() | inputs.search))
    method = inputs.method or {"name": "task_arithmetic", "params": {}}
    lm = open_live_model(
        inputs.base,
        inputs.vectors,
        runtime=params.runtime,
        method=method["name"],
        method_params=MethodParams(**method["params"]),
    )
    questions = list(pd.read_parquet(inputs.queries)["question"])
    objective = SearchObjective(lm.engine, lm.apply, questions, cfg)
    worker = f"{socket.gethostname()}-{os.getpid()}"
    print(f"worker {worker} (sampler seed {seed}) joins {args.study}")
    ran = optimize(
        study,
        objective,
        inputs.ranges,
        target=inputs.n_trials,
        max_trials=args.trials,
        worker=worker,
        progress=not args.quiet,
    )
    done = len(complete_trials(study))
    print(f"worker {worker}: ran {ran} trials; the study has {done} of {inputs.n_trials} complete")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="join a merge-search study as another worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--study", required=True, help="study name printed by the search stage")
    p.add_argument(
        "--storage",
        help="Optuna storage URL or journal file (default: search.storage, else the stage's "
        "journal file .deltalab/studies/<cond>-<seed>.journal)",
    )
    p.add_argument("--trials", type=int, default=None, help="at most this many trials here")
    p.add_argument(
        "--seed", type=int, default=None, help="sampler seed (default: random; workers that "
        "share a seed suggest the same points)",
    )  # fmt: skip
    p.add_argument("--params", default="params.yaml", help="for runtime and batch sizes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)
