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

import torch

from deltalab import paths, stage
from deltalab.atomic import write_json
from deltalab.errors import ConfigError
from deltalab.masks.build import MaskFile
from deltalab.tensors.reader import Checkpoint
from deltalab.tokens import inject_mul_tokens
from deltalab.train.dpo import (
    dpo_trainer,
    load_preference_rows,
    preference_dataset,
    preference_split,
)
from deltalab.train.masked_adamw import MaskedAdamW
from deltalab.train.recipe import TrainingRun

REWARD = "final/eval_rewards/accuracies"


def frozen_counts(model, parent: Checkpoint, mask: MaskFile) -> dict[str, int]:
    """Entries outside the mask, how many of them differ from the parent's bits, and inside."""
    frozen = changed = trainable = 0
    for name, param in model.named_parameters():
        after = param.detach().cpu().contiguous()
        before = parent.read(name).view(after.shape).to(after.dtype)  # as the model loaded it
        keep = mask.mask(name) if name in mask.entries else torch.zeros(after.shape, dtype=bool)
        differs = (
            after.view(torch.uint8)
            .view(-1, after.element_size())
            .ne(before.view(torch.uint8).view(-1, after.element_size()))
            .any(1)
        )  # bitwise: -0.0 vs 0.0 and NaN payloads count as changes
        frozen += int((~keep).sum())
        changed += int((differs & ~keep.reshape(-1)).sum())
        trainable += int(keep.sum())
    return {"frozen": frozen, "frozen_changed": changed, "trainable": trainable}


def train_masked(params, cond: str, seed: int, name: str, method: str, train, val) -> dict:
    cfg = params.masked_dpo
    mask_file = paths.masks(cond, seed) / f"{method}.safetensors"
    if method not in params.masks.methods:
        raise ConfigError(f"masked_dpo needs the {method!r} mask: add it to masks.methods")
    mask = MaskFile(mask_file)
    parent = paths.checkpoint(cond, seed, "sft_gsm8k")
    with TrainingRun(
        paths.checkpoint(cond, seed, name),
        paths.train_metrics(name, cond, seed),
        params.runtime,
        seed,
    ) as run:
        model, tokenizer = run.load_parent(parent)
        reference = run.load_frozen(parent)
        named = dict(model.named_parameters())
        mask.check_model({n: p.shape for n, p in named.items()}, str(parent))
        masks = {}
        for n, p in named.items():
            if n in mask.entries:
                masks[p] = mask.mask(n).to(p.device)
            else:
                p.requires_grad_(False)  # left out of the mask: frozen whole
        trainable = [p for p in named.values() if p.requires_grad]
        optimizer = MaskedAdamW(
            trainable, masks, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        trainer = dpo_trainer(model, reference, tokenizer, run, cfg, train, val, (optimizer, None))
        final = run.train(trainer)
        counts = frozen_counts(model, Checkpoint(parent), mask)
        if counts["frozen_changed"]:  # a bug of the optimizer, never of the input
            raise RuntimeError(f"{name}: {counts['frozen_changed']} frozen entries changed")
        run.summary.update(counts | {"mask": method, "density": mask.density})
        run.summary[REWARD] = final["eval_rewards/accuracies"]
        run.save(model, tokenizer)
    return counts | {"mask": method, "val_reward_accuracy": run.summary[REWARD]}


def main(params, cond: str, seed: int) -> None:
    cfg = params.masked_dpo
    rows = load_preference_rows(paths.DATA / "prefs/train.jsonl")
    train_rows, val_rows = preference_split(rows, cfg.val_fraction, cfg.max_train_samples)
    inject = inject_mul_tokens if cond == "mul_tokens" else (lambda text: text)
    train, val = preference_dataset(train_rows, inject), preference_dataset(val_rows, inject)

    if not cfg.control:  # dvc.yaml declares the control's outputs: never leave them missing
        raise ConfigError(
            "masked_dpo.control: false needs the masked_dpo_random outputs removed from the "
            "masked_dpo stage in dvc.yaml (and masked_dpo_random from evaluate.track_models)"
        )
    runs = {"masked_dpo": cfg.mask, "masked_dpo_random": "random"}
    results = {
        name: train_masked(params, cond, seed, name, m, train, val) for name, m in runs.items()
    }
    full = json.loads((paths.train_metrics("dpo", cond, seed) / "metrics.json").read_text())
    results["dpo"] = {"mask": None, "val_reward_accuracy": full[REWARD]}
    write_json(paths.dots_metrics("masked_dpo", cond, seed), results)
    for name, r in results.items():
        line = f"{cond}/seed{seed} {name} ({r['mask'] or 'full'}): validation reward accuracy "
        line += f"{r['val_reward_accuracy']:.3f}"
        if "frozen" in r:
            line += f", {r['trainable']} trainable, {r['frozen_changed']} of {r['frozen']} "
            line += "frozen entries changed"
        print(line)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
