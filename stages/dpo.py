"""dpo@<cond>-<seed> (delta track): DPO from sft_gsm8k on the preference pairs, against the frozen
parent as reference. Saves the final Adam first moments (`exp_avg`, by parameter name) beside the
checkpoint for the momentum masks."""

from safetensors.torch import save_file

from deltalab import lineage, paths, stage
from deltalab.atomic import atomic_file
from deltalab.tokens import condition_transform
from deltalab.train.dpo import dpo_trainer, preference_datasets
from deltalab.train.recipe import TrainingRun, optimizer_state


def main(params, cond: str, seed: int) -> None:
    cfg = params.dpo
    train, val = preference_datasets(
        paths.dataset("prefs", "train"), cfg, condition_transform(cond)
    )

    parent = paths.checkpoint(cond, seed, lineage.PARENTS["dpo"])
    out = paths.checkpoint(cond, seed, "dpo")
    logs = paths.train_metrics("dpo", cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(parent)
        reference = run.load_frozen(parent)
        trainer = dpo_trainer(model, reference, tokenizer, run, cfg, train, val)
        final = run.train(trainer)
        for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
            run.summary[f"final/eval_{key}"] = final[f"eval_{key}"]
        run.summary["final/val_pairs"] = len(val)

        exp_avg = optimizer_state(trainer, model, "exp_avg")
        with atomic_file(paths.dpo_exp_avg(cond, seed)) as tmp:
            # One metadata entry: safetensors writes several in hash order, not byte-stable.
            save_file(exp_avg, str(tmp), metadata={"deltalab": f"exp_avg of {out}"})
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
