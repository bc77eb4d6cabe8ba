"""analyze_deltas@<cond>-<seed>: how each post-training stage moved the weights of one member.

Pairs come from `study.deltas` (every name is the checkpoint `models/<cond>/seed<seed>/<name>/`),
each delta's method from its checkpoint's recipe; how they are measured from `analyze_deltas`.
Deltas that share a base are compared with each other; `study.contrast` is compared head-to-head
with the published SFT-vs-RLVR numbers. Writes metrics/deltas/<cond>-<seed>.json (numbers only) and
reports/deltas/<cond>-<seed>/; a member outside the delta track, a bad contrast or a missing
checkpoint fails before anything is read or written.
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir, write_json
from deltalab.deltas.analysis import DeltaInput, analyze
from deltalab.deltas.contrasts import check_contrast
from deltalab.deltas.params import AnalyzeDeltasParams
from deltalab.deltas.report import write_report
from deltalab.deltas.summary import metrics
from deltalab.errors import CheckpointError
from deltalab.models import configure_torch
from deltalab.schema.study import delta_labels, delta_methods
from deltalab.tensors.reader import Checkpoint


def main(params, cond: str, seed: int) -> None:
    cfg = AnalyzeDeltasParams(
        **params.analyze_deltas.model_dump(),
        pairs=params.study.deltas,
        contrast=params.study.contrast,
        methods=delta_methods(params.study.deltas, params.study.checkpoints),
    )
    members = delta_labels(params.study.deltas)  # (label, base, finetuned)
    check_contrast({label: base for label, base, _ in members}, cfg.contrast)
    opened: dict[str, Checkpoint] = {}
    for name in dict.fromkeys(n for _, base, ft in members for n in (base, ft)):
        path = paths.checkpoint(cond, seed, name)
        try:
            opened[name] = Checkpoint(path)
        except CheckpointError as exc:
            raise CheckpointError(f"analyze_deltas@{cond}-{seed}: {name!r}: {exc}") from exc
    configure_torch(params.runtime)
    deltas = [DeltaInput(label, opened[base], opened[ft]) for label, base, ft in members]
    result = analyze(deltas, cfg, include=cfg.include or None, exclude=cfg.exclude or None)
    with atomic_dir(paths.member_report("deltas", cond, seed)) as tmp:
        write_report(result, tmp, title=f"Weight deltas: {cond}, seed {seed}")
    write_json(paths.delta_metrics(cond, seed), metrics(result))


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
