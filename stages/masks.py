"""masks@<cond>-<seed>: which weights matter for DPO, by four scores, and how much they agree.

magnitude: |W_dpo − W_sft_gsm8k|; momentum: |exp_avg| saved by `dpo`; fisher: the empirical
Fisher diagonal of the DPO loss over `masks.fisher_samples` training pairs at the DPO weights;
random: seeded. Each keeps `masks.density` of the eligible entries (per tensor or global) →
masks/<cond>/seed<seed>/<method>.safetensors (packed bits); Jaccard of every pair, pooled and per
tensor, beside the random expectation → metrics/masks/<cond>-<seed>.json, reports/masks/<member>/.
"""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.data.preferences import preference_pairs
from deltalab.errors import CheckpointError
from deltalab.masks.build import MaskFile, build_masks, eligible, moved_entries, score_sources
from deltalab.masks.compare import jaccard_table
from deltalab.masks.fisher import checkpoint_fisher
from deltalab.masks.report import plot_layers, summary
from deltalab.models import configure_torch
from deltalab.tensors.reader import Checkpoint


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    cfg = params.masks
    run = params.study.masks_from
    base = Checkpoint(paths.checkpoint(cond, seed, params.study.checkpoints[run].parent))
    tuned = Checkpoint(paths.checkpoint(cond, seed, run))
    names = eligible([n for n in base.tensors if base.info(n).is_float], cfg.exclude)
    if not names:
        raise CheckpointError(f"{base.path}: no tensor left after masks.exclude={cfg.exclude}")
    fisher = None
    if "fisher" in cfg.methods:  # at the DPO weights, against the DPO reference (its parent)
        pairs, _ = preference_pairs(
            paths.dataset("prefs", "train"), params.dpo.val_fraction, params.dpo.max_train_samples
        )  # the dpo stage's training pairs
        fisher = checkpoint_fisher(
            tuned.path, base.path, params.runtime.device, pairs[: cfg.fisher_samples],
            params.dpo.beta, names, stage.transform(params, cond), max_length=params.dpo.max_length,
        )  # fmt: skip
    sources = score_sources(
        base, tuned, names, cfg.methods,
        moments=paths.exp_avg(cond, seed, run), fisher=fisher, seed=cfg.seed,
    )  # fmt: skip
    meta = {"density": repr(cfg.density), "selection": cfg.selection, "seed": str(cfg.seed)}
    meta |= {"base": str(base.path), "finetuned": str(tuned.path)}
    member = paths.member(cond, seed)
    with atomic_dir(paths.masks(cond, seed)) as tmp:
        moved = moved_entries(base, tuned, names)  # a mask selects only entries DPO changed
        files = build_masks(tmp, sources, cfg.density, cfg.selection, meta, moved)
        opened = {method: MaskFile(path) for method, path in files.items()}
        reference_method = "magnitude" if "magnitude" in opened else next(iter(opened))
        table = jaccard_table(opened, reference_method)
        with atomic_dir(paths.member_report("masks", cond, seed)) as report:
            plot_layers(table, reference_method, report / "jaccard_layers.png", member)
        kept = {method: f.density for method, f in opened.items()}
    stage.finish(
        paths.dots_metrics("masks", cond, seed),
        summary(table, cfg.density, cfg.selection, kept),
        f"{member}: Jaccard "
        + ", ".join(
            f"{pair} {row['jaccard']:.4f} (random {row['random']:.4f})"
            for pair, row in table.items()
        ),
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
