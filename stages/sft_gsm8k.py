"""sft_gsm8k@<cond>-<seed>: GSM8K SFT from sft_tulu, then measure how often greedy answers to
held-out questions stop with EOS (the original study's models never stopped)."""

from deltalab import paths, stage
from deltalab.data import read_jsonl
from deltalab.evaluation.generation import format_prompt, generate_greedy
from deltalab.train.recipe import run_sft_stage
from deltalab.train.sft import gsm8k_to_messages, with_replay


def main(params, cond: str, seed: int) -> None:
    cfg = params.sft_gsm8k
    rows = read_jsonl(paths.DATA / "gsm8k/train.jsonl", ["question", "answer"])
    if cfg.max_train_samples:
        rows = rows[: cfg.max_train_samples]
    # Validation comes from the train split: the test split stays unseen until evaluation.
    n_val = max(1, len(rows) // 20)
    train, val = gsm8k_to_messages(rows[n_val:]), gsm8k_to_messages(rows[:n_val])
    if cfg.replay_tulu_fraction:
        tulu = read_jsonl(paths.DATA / "tulu/train.jsonl", ["messages"])
        train = with_replay(train, tulu, cfg.replay_tulu_fraction, seed)
    held_out = read_jsonl(paths.DATA / "gsm8k/test.jsonl", ["question"])[: cfg.stop_eval_questions]

    def measure_stop_rate(model, tokenizer, live) -> None:
        model.eval()
        responses = generate_greedy(
            model,
            tokenizer,
            [format_prompt(r["question"]) for r in held_out],
            max_new_tokens=cfg.stop_eval_max_new_tokens,
            batch_size=32,
        )
        live.summary["stop_rate"] = sum(r.stopped for r in responses) / len(responses)
        live.summary["stop_eval_questions"] = len(responses)

    run_sft_stage(params, "sft_gsm8k", "sft_tulu", cond, seed, train, val, after=measure_stop_rate)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
