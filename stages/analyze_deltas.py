"""analyze_deltas@<cond>: how each training stage moved the weights of the first seed's models.

Pairs come from `analyze_deltas.pairs` (default pretrain→sft_tulu, sft_tulu→sft_gsm8k); deltas
that share a base (sft_tulu→sft_gsm8k/rlvr/dpo later) are compared with each other automatically.
Writes metrics/deltas/<cond>.json (small, numbers only) and reports/deltas/<cond>/.
"""

from pathlib import Path

from deltalab import paths, stage
from deltalab.atomic import atomic_dir, write_json
from deltalab.deltas.analysis import DeltaInput, analyze
from deltalab.deltas.io import Checkpoint
from deltalab.deltas.report import metrics, write_report
from deltalab.models import configure_torch

SEEDED = {"pretrain", "sft_tulu", "sft_gsm8k"}  # per-seed checkpoints; the delta track is not


def checkpoint_dir(cond: str, seed: int, name: str) -> Path:
    return paths.checkpoint(cond, seed, name) if name in SEEDED else Path("models") / cond / name


def main(params, cond: str) -> None:
    configure_torch(params.runtime)
    cfg = params.analyze_deltas
    seed = params.seeds[0]
    opened: dict[str, Checkpoint] = {}

    def open_checkpoint(name: str) -> Checkpoint:
        if name not in opened:
            opened[name] = Checkpoint(checkpoint_dir(cond, seed, name))
        return opened[name]

    finetuned = [ft for _, ft in cfg.pairs]
    deltas = [
        DeltaInput(
            ft if finetuned.count(ft) == 1 else f"{ft}_from_{base}",
            open_checkpoint(base),
            open_checkpoint(ft),
        )
        for base, ft in cfg.pairs
    ]
    result = analyze(deltas, cfg)
    with atomic_dir(Path("reports/deltas") / cond) as tmp:
        write_report(result, tmp, title=f"Weight deltas: {cond} (seed {seed})")
    write_json(Path("metrics/deltas") / f"{cond}.json", metrics(result))


if __name__ == "__main__":
    stage.run(main, cond=str)
