"""prepare_data: every dataset of the study (synthetic, or hub with pinned revisions)."""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.data.prepare import prepare


def main(params) -> None:
    with atomic_dir(paths.DATA) as tmp:
        counts = prepare(params.data, tmp)
    for name, n in sorted(counts.items()):
        print(f"{name}: {n} rows")


if __name__ == "__main__":
    stage.run(main)
