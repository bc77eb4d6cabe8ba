"""masked_dpo@<cond>-<seed>: DPO from sft_gsm8k that may change only the entries of one mask.

The mask `masked_dpo.mask` comes from the masks stage (its density: `masks.density`); tensors the
mask leaves out (embeddings, norms) are frozen whole. The optimizer is the masked AdamW: masked
moments, decay only on masked entries, state only for them. After training every frozen entry is
compared with the parent bit for bit; the counts (`frozen`, `frozen_changed`, `trainable`) go to
the training metrics, and a changed frozen entry fails the stage. The control, the same run with
the random mask of the same density, gives models/<cond>/seed<seed>/masked_dpo_random/.
Masked, random-mask and full DPO side by side: metrics/masked_dpo/<cond>-<seed>.json.
"""

import json

from deltalab import lineage, paths, stage
from deltalab.errors import ConfigError
from deltalab.masks.build import MaskFile
from deltalab.tensors.reader import Checkpoint
from deltalab.tokens import condition_transform
from deltalab.train.dpo import dpo_trainer, preference_datasets
from deltalab.train.masked_dpo import check_frozen, masked_optimizer
from deltalab.train.recipe import TrainingRun

REWARD = "final/eval_rewards/accuracies"


def train_masked(params, cond: str, seed: int, name: str, method: str, train, val) -> dict:
    cfg = params.masked_dpo
    if method not in params.masks.methods:
        raise ConfigError(f"masked_dpo needs the {method!r} mask: add it to masks.methods")
    mask = MaskFile(paths.mask_file(cond, seed, method))
    parent = paths.checkpoint(cond, seed, lineage.PARENTS[name])
    logs = paths.train_metrics(name, cond, seed)
    with TrainingRun(paths.checkpoint(cond, seed, name), logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(parent)
        reference = run.load_frozen(parent)
        optimizer = masked_optimizer(model, mask, str(parent), cfg.learning_rate, cfg.weight_decay)
        trainer = dpo_trainer(model, reference, tokenizer, run, cfg, train, val, (optimizer, None))
        final = run.train(trainer)
        counts = check_frozen(model, Checkpoint(parent), mask, name)
        run.summary.update(counts | {"mask": method, "density": mask.density})
        run.summary[REWARD] = final["eval_rewards/accuracies"]
        run.save(model, tokenizer)
    return counts | {"mask": method, "val_reward_accuracy": run.summary[REWARD]}


def main(params, cond: str, seed: int) -> None:
    cfg = params.masked_dpo
    if not cfg.control:  # dvc.yaml declares the control's outputs: never leave them missing
        raise ConfigError(
            "masked_dpo.control: false needs the masked_dpo_random outputs removed from the "
            "masked_dpo stage in dvc.yaml (and masked_dpo_random from evaluate.track_models)"
        )
    train, val = preference_datasets(
        paths.dataset("prefs", "train"), cfg, condition_transform(cond)
    )
    runs = {"masked_dpo": cfg.mask, "masked_dpo_random": "random"}
    results = {n: train_masked(params, cond, seed, n, m, train, val) for n, m in runs.items()}
    full = json.loads(paths.train_summary(lineage.MASK_RUN, cond, seed).read_text())
    results["dpo"] = {"mask": None, "val_reward_accuracy": full[REWARD]}
    stage.finish(
        paths.dots_metrics("masked_dpo", cond, seed),
        results,
        f"{paths.member(cond, seed)}: validation reward accuracy "
        + ", ".join(f"{n} {r['val_reward_accuracy']:.3f}" for n, r in results.items())
        + f"; frozen entries changed: {results['masked_dpo']['frozen_changed']}",
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
