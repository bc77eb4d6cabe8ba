"""sft_tulu@<cond>-<seed>: instruction SFT (Tulu-3-style chat mixture) from the pretrained model."""

from deltalab import paths, stage
from deltalab.data import read_jsonl
from deltalab.train.recipe import TrainingRun
from deltalab.train.sft import inject_assistant_turns, sft_trainer


def main(params, cond: str, seed: int) -> None:
    cfg = params.sft_tulu
    train = read_jsonl(paths.DATA / "tulu/train.jsonl", ["messages"])
    val = read_jsonl(paths.DATA / "tulu/val.jsonl", ["messages"])
    if cfg.max_train_samples:
        train = train[: cfg.max_train_samples]
    if cond == "mul_tokens":
        train, val = inject_assistant_turns(train), inject_assistant_turns(val)

    out = paths.checkpoint(cond, seed, "sft_tulu")

    logs = paths.train_metrics("sft_tulu", cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(paths.checkpoint(cond, seed, "pretrain"))
        run.train(sft_trainer(model, tokenizer, run, cfg, train, val))
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
