"""sample_queries@<cond>-<seed>: a difficulty-balanced query set for the merge search.

The kept queries of difficulty.parquet split at the median difficulty into easy and hard halves;
`sample_queries.per_group` drawn from each with a seed →
data/search/<cond>/seed<seed>/queries.parquet.
"""

import pandas as pd

from deltalab import paths, stage
from deltalab.atomic import atomic_file
from deltalab.errors import DataError
from deltalab.search.queries import sample_easy_hard


def main(params, cond: str, seed: int) -> None:
    cfg = params.sample_queries
    source = paths.difficulty_table(cond, seed)
    if not source.is_file():
        raise DataError(f"{source}: not found (run `dvc repro difficulty@{cond}-{seed}`)")
    queries = sample_easy_hard(pd.read_parquet(source), cfg.per_group, cfg.seed)
    with atomic_file(paths.queries(cond, seed)) as tmp:
        queries.to_parquet(tmp, index=False)
    for group, members in queries.groupby("group", sort=False):
        print(
            f"{cond}/seed{seed}: {len(members)} {group} queries, difficulty "
            f"{members['difficulty'].min():.2f}-{members['difficulty'].max():.2f}"
        )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
