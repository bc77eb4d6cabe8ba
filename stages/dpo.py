"""The dpo recipe, <checkpoint>@<cond>-<seed>: DPO from the declared parent on the preference pairs,
against the frozen parent as reference. Saves the final Adam first moments (`exp_avg`, by parameter
name) beside the checkpoint for the momentum masks."""

from safetensors.torch import save_file

from deltalab import paths, stage
from deltalab.atomic import atomic_file
from deltalab.train.dpo import dpo_trainer, preference_datasets
from deltalab.train.launch import distributed
from deltalab.train.recipe import TrainingRun, optimizer_state


def main(params, checkpoint: str, cond: str, seed: int) -> None:
    spec = stage.made_here(params, checkpoint, "dpo")
    cfg = params.dpo
    parent = stage.checkpoint(cond, seed, spec.parent)
    out = paths.checkpoint(cond, seed, checkpoint)
    logs = paths.train_metrics(checkpoint, cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(parent)
        reference = run.load_frozen(parent)
        train, val = preference_datasets(
            paths.dataset("prefs", "train"), cfg, stage.transform(params, cond), tokenizer
        )
        trainer = dpo_trainer(model, reference, tokenizer, run, cfg, train, val)
        final = run.train(trainer)
        for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
            run.summary[f"final/eval_{key}"] = final[f"eval_{key}"]
        run.summary["final/val_pairs"] = len(val)

        exp_avg = optimizer_state(trainer, model, "exp_avg")  # the same on every rank
        if run.is_main:
            with atomic_file(paths.exp_avg(cond, seed, checkpoint)) as tmp:
                # One metadata entry: safetensors writes several in hash order, not byte-stable.
                save_file(exp_avg, str(tmp), metadata={"deltalab": f"exp_avg of {out}"})
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(distributed(main), checkpoint=str, cond=str, seed=int)
