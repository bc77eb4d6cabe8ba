"""The sft_tulu recipe, <checkpoint>@<cond>-<seed>: instruction SFT (Tulu-3-style chat mixture) from
the declared parent."""

from deltalab import paths, stage
from deltalab.data import read_jsonl
from deltalab.train.launch import distributed
from deltalab.train.recipe import TrainingRun
from deltalab.train.sft import rewrite_assistant_turns, sft_trainer


def main(params, checkpoint: str, cond: str, seed: int) -> None:
    spec = stage.made_here(params, checkpoint, "sft_tulu")
    cfg = params.sft_tulu
    rewrite = stage.transform(params, cond)
    train = read_jsonl(paths.dataset("tulu", "train"), ["messages"])[: cfg.max_train_samples]
    val = read_jsonl(paths.dataset("tulu", "val"), ["messages"])
    train, val = rewrite_assistant_turns(train, rewrite), rewrite_assistant_turns(val, rewrite)

    out = paths.checkpoint(cond, seed, checkpoint)
    logs = paths.train_metrics(checkpoint, cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        model, tokenizer = run.load_parent(stage.checkpoint(cond, seed, spec.parent))
        run.train(sft_trainer(model, tokenizer, run, cfg, train, val))
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(distributed(main), checkpoint=str, cond=str, seed=int)
