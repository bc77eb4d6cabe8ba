"""The masked_dpo recipe, masked_dpo@<cond>-<seed>: every checkpoint the study makes with it, by
DPO from the parent of the masks' run (`study.masks_from`) that may change only the entries of
its declared mask (`study.checkpoints.<name>.mask`; density: `masks.density`).

Tensors the mask leaves out (embeddings, norms) are frozen whole. The optimizer is the masked
AdamW: masked moments, decay only on masked entries, state only for them. After training every
frozen entry is compared with the parent bit for bit; the counts (`frozen`, `frozen_changed`,
`trainable`) go to the training metrics, and a changed frozen entry fails the stage. A `random`
mask of the same density is the control. Masked runs and the full DPO run side by side:
metrics/masked_dpo/<cond>-<seed>.json.
"""

import json

from deltalab import paths, stage
from deltalab.masks.build import MaskFile
from deltalab.schema.study import made_by
from deltalab.tensors.reader import Checkpoint
from deltalab.train.dpo import dpo_trainer, preference_datasets
from deltalab.train.launch import distributed
from deltalab.train.masked_dpo import check_frozen, masked_optimizer
from deltalab.train.recipe import TrainingRun

REWARD = "final/eval_rewards/accuracies"


def train_masked(params, cond: str, seed: int, name: str) -> dict:
    cfg, spec = params.masked_dpo, params.study.checkpoints[name]
    mask = MaskFile(paths.mask_file(cond, seed, spec.mask))
    parent = stage.checkpoint(cond, seed, spec.parent)
    logs = paths.train_metrics(name, cond, seed)
    with TrainingRun(paths.checkpoint(cond, seed, name), logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(parent)
        reference = run.load_frozen(parent)
        train, val = preference_datasets(
            paths.dataset("prefs", "train"), cfg, stage.transform(params, cond), tokenizer
        )
        optimizer = masked_optimizer(model, mask, str(parent), cfg.learning_rate, cfg.weight_decay)
        trainer = dpo_trainer(model, reference, tokenizer, run, cfg, train, val, (optimizer, None))
        final = run.train(trainer)
        counts = check_frozen(model, Checkpoint(parent), mask, name)
        run.summary.update(counts | {"mask": spec.mask, "density": mask.density})
        run.summary[REWARD] = final["eval_rewards/accuracies"]
        run.save(model, tokenizer)
    return counts | {"mask": spec.mask, "val_reward_accuracy": run.summary[REWARD]}


def main(params, cond: str, seed: int) -> None:
    masked = made_by(params.study.checkpoints, "masked_dpo")
    results = {name: train_masked(params, cond, seed, name) for name in masked}
    full_run = params.study.masks_from
    full = json.loads(paths.train_summary(full_run, cond, seed).read_text())
    results[full_run] = {"mask": None, "val_reward_accuracy": full[REWARD]}
    stage.finish(
        paths.dots_metrics("masked_dpo", cond, seed),
        results,
        f"{paths.member(cond, seed)}: validation reward accuracy "
        + ", ".join(f"{n} {r['val_reward_accuracy']:.3f}" for n, r in results.items())
        + f"; frozen entries changed: {sum(results[n]['frozen_changed'] for n in masked)}",
    )


if __name__ == "__main__":
    stage.run(distributed(main), cond=str, seed=int)
