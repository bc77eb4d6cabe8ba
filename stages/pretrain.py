"""The pretrain recipe, <checkpoint>@<cond>-<seed>: GPT-2 from scratch on the corpus, rewritten by
the condition's transform (`study.transforms`). An existing checkpoint is the import recipe."""

from transformers import AutoTokenizer

from deltalab import paths, stage
from deltalab.data import read_jsonl
from deltalab.models import build_gpt2
from deltalab.train.launch import distributed
from deltalab.train.pretrain import pretrain_trainer
from deltalab.train.recipe import TrainingRun


def main(params, checkpoint: str, cond: str, seed: int) -> None:
    stage.made_here(params, checkpoint, "pretrain")
    cfg = params.pretrain
    out = paths.checkpoint(cond, seed, checkpoint)
    logs = paths.train_metrics(checkpoint, cond, seed)
    with TrainingRun(out, logs, params.runtime, seed) as run:
        tokenizer = AutoTokenizer.from_pretrained(paths.TOKENIZER)
        rewrite = stage.transform(params, cond)
        texts = {s: read_jsonl(paths.dataset("corpus", s), ["text"]) for s in ("train", "val")}
        corpus = {s: [rewrite(r["text"]) for r in rows] for s, rows in texts.items()}
        model = build_gpt2(params.model, tokenizer, seed)
        trainer = pretrain_trainer(model, tokenizer, run, cfg, corpus["train"], corpus["val"])
        run.train(trainer)
        run.summary["final/train_blocks"] = len(trainer.train_dataset)
        run.summary["final/tokens_per_block"] = min(cfg.max_length, model.config.n_positions)
        run.save(model, tokenizer)


if __name__ == "__main__":
    stage.run(distributed(main), checkpoint=str, cond=str, seed=int)
