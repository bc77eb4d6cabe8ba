"""The sft_gsm8k recipe, <checkpoint>@<cond>-<seed>: GSM8K SFT from the declared parent, then
measure how often greedy answers to held-out questions stop with EOS (the original study's models
never stopped)."""

from deltalab import paths, stage
from deltalab.data import read_jsonl
from deltalab.evaluation.generation import generate_greedy
from deltalab.evaluation.prompts import format_prompt
from deltalab.train.launch import distributed
from deltalab.train.recipe import TrainingRun
from deltalab.train.sft import gsm8k_to_messages, rewrite_assistant_turns, sft_trainer, with_replay


def main(params, checkpoint: str, cond: str, seed: int) -> None:
    spec = stage.made_here(params, checkpoint, "sft_gsm8k")
    cfg = params.sft_gsm8k
    rows = read_jsonl(paths.dataset("gsm8k", "train"), ["question", "answer"])
    rows = rows[: cfg.max_train_samples]
    # Validation comes from the train split: the test split stays unseen until evaluation.
    n_val = max(1, int(len(rows) * cfg.val_fraction))
    train, val = gsm8k_to_messages(rows[n_val:]), gsm8k_to_messages(rows[:n_val])
    if cfg.replay_tulu_fraction:
        tulu = read_jsonl(paths.dataset("tulu", "train"), ["messages"])
        train = with_replay(train, tulu, cfg.replay_tulu_fraction, seed)
    rewrite = stage.transform(params, cond)
    train, val = rewrite_assistant_turns(train, rewrite), rewrite_assistant_turns(val, rewrite)
    held_out = read_jsonl(paths.dataset("gsm8k", "test"), ["question"])[: cfg.stop_eval_questions]

    out = paths.checkpoint(cond, seed, checkpoint)
    logs = paths.train_metrics(checkpoint, cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(stage.checkpoint(cond, seed, spec.parent))
        run.train(sft_trainer(model, tokenizer, run, cfg, train, val))

        model.eval()
        responses = generate_greedy(
            model,
            tokenizer,
            [format_prompt(tokenizer, r["question"]) for r in held_out],
            max_new_tokens=cfg.stop_eval_max_new_tokens,
            batch_size=cfg.stop_eval_batch_size,
        )
        run.summary["stop_rate"] = sum(r.stopped for r in responses) / len(responses)
        run.summary["stop_eval_questions"] = len(responses)
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(distributed(main), checkpoint=str, cond=str, seed=int)
