"""The rlvr recipe, <checkpoint>@<cond>-<seed>: GRPO from the declared parent on the RLVR prompts
with a verifiable reward (extracted answer == gold). Greedy accuracy on held-out prompts is measured
before and after training and compared with an exact McNemar test."""

from deltalab import paths, stage
from deltalab.errors import DataError
from deltalab.train.grpo import (
    greedy_correct,
    grpo_trainer,
    load_rlvr_rows,
    rlvr_dataset,
    rlvr_summary,
)
from deltalab.train.launch import distributed
from deltalab.train.recipe import TrainingRun


def main(params, checkpoint: str, cond: str, seed: int) -> None:
    spec = stage.made_here(params, checkpoint, "rlvr")
    cfg = params.rlvr
    source = paths.dataset("rlvr", "train")
    rows = load_rlvr_rows(source)
    if len(rows) <= cfg.test_size:
        raise DataError(f"{source}: {len(rows)} prompts, but rlvr.test_size is {cfg.test_size}")
    test, train = rows[: cfg.test_size], rows[cfg.test_size :]

    out = paths.checkpoint(cond, seed, checkpoint)
    logs = paths.train_metrics(checkpoint, cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(stage.checkpoint(cond, seed, spec.parent))

        def held_out() -> list[bool]:
            return greedy_correct(
                model, tokenizer, test, cfg.max_completion_length, cfg.eval_batch_size
            )

        before = held_out()
        trainer = grpo_trainer(model, tokenizer, run, cfg, rlvr_dataset(train, tokenizer))
        run.train(trainer)
        after = held_out()

        summary = rlvr_summary(trainer.state.log_history, cfg.max_steps, before, after)
        run.summary.update(summary)
        if run.is_main:
            print(
                f"{checkpoint} {cond}/seed{seed}: reward {summary['reward/first_fifth']:.3f} -> "
                f"{summary['reward/last_fifth']:.3f} (first/last fifth); held-out greedy "
                f"{summary['heldout/parent_accuracy']:.3f} -> {summary['heldout/accuracy']:.3f} "
                f"(McNemar p={summary['heldout/mcnemar_p']:.2g})"
            )
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(distributed(main), checkpoint=str, cond=str, seed=int)
