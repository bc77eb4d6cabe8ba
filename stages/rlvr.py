"""rlvr@<cond>-<seed> (delta track): GRPO from sft_tulu on the RLVR prompts with a verifiable
reward (extracted answer == gold). sft_tulu is also sft_gsm8k's parent, so the SFT and RLVR task
vectors share a base. Greedy accuracy on held-out prompts is measured before and after training
and compared with an exact McNemar test."""

from deltalab import paths, stage
from deltalab.errors import DataError
from deltalab.evaluation.stats import discordant_counts, mcnemar_exact
from deltalab.train.grpo import (
    greedy_correct,
    grpo_trainer,
    load_rlvr_rows,
    reward_by_fifth,
    rlvr_dataset,
)
from deltalab.train.recipe import TrainingRun


def main(params, cond: str, seed: int) -> None:
    cfg = params.rlvr
    source = paths.DATA / "rlvr/train.jsonl"
    rows = load_rlvr_rows(source)
    if len(rows) <= cfg.test_size:
        raise DataError(f"{source}: {len(rows)} prompts, but rlvr.test_size is {cfg.test_size}")
    test, train = rows[: cfg.test_size], rows[cfg.test_size :]

    out = paths.checkpoint(cond, seed, "rlvr")

    logs = paths.train_metrics("rlvr", cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(paths.checkpoint(cond, seed, "sft_tulu"))

        def held_out() -> list[bool]:
            return greedy_correct(
                model, tokenizer, test, cfg.max_completion_length, cfg.eval_batch_size
            )

        before = held_out()
        trainer = grpo_trainer(model, tokenizer, run, cfg, rlvr_dataset(train))
        run.train(trainer)
        after = held_out()

        fifths = reward_by_fifth(trainer.state.log_history, cfg.max_steps)
        lost, gained = discordant_counts(before, after)
        run.summary.update(
            {
                "reward/first_fifth": fifths[0],
                "reward/last_fifth": fifths[-1],
                "reward/gain": fifths[-1] - fifths[0],
                "heldout/prompts": len(test),
                "heldout/parent_accuracy": sum(before) / len(test),
                "heldout/accuracy": sum(after) / len(test),
                "heldout/gained": gained,
                "heldout/lost": lost,
                "heldout/mcnemar_p": mcnemar_exact(lost, gained),
            }
        )
        print(
            f"rlvr {cond}/seed{seed}: reward {fifths[0]:.3f} -> {fifths[-1]:.3f} (first/last "
            f"fifth); held-out greedy {sum(before)}/{len(test)} -> {sum(after)}/{len(test)} "
            f"(+{gained} -{lost}, McNemar p={mcnemar_exact(lost, gained):.2g})"
        )
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
