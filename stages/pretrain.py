"""pretrain@<cond>-<seed>: GPT-2 from scratch on the corpus (mul tokens injected for mul_tokens),
or import of an existing checkpoint when `pretrain.import_from` is set."""

from transformers import AutoTokenizer, set_seed

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.data import read_jsonl
from deltalab.models import build_gpt2, configure_torch, import_pretrained, save_checkpoint
from deltalab.tokens import inject_mul_tokens
from deltalab.train.logging import dvclive_callback, open_live
from deltalab.train.pretrain import pretrain


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    set_seed(seed)
    cfg, out = params.pretrain, paths.checkpoint(cond, seed, "pretrain")
    tokenizer = AutoTokenizer.from_pretrained(paths.TOKENIZER)
    live = open_live(paths.train_metrics("pretrain", cond, seed))
    if cfg.import_from:
        model = import_pretrained(
            cfg.import_from,
            tokenizer,
            revision=cfg.revision,
            trust_remote_code=params.runtime.trust_remote_code,
        )
        live.summary["imported"] = 1
    else:
        inject = inject_mul_tokens if cond == "mul_tokens" else (lambda text: text)
        corpus = {
            split: [
                inject(r["text"])
                for r in read_jsonl(paths.DATA / f"corpus/{split}.jsonl", ["text"])
            ]
            for split in ("train", "val")
        }
        model = build_gpt2(params.model, tokenizer, seed)
        losses = pretrain(
            model,
            tokenizer,
            corpus["train"],
            corpus["val"],
            cfg,
            params.runtime,
            seed,
            [dvclive_callback(live)],
        )
        live.summary.update({f"final/{k}": v for k, v in losses.items()})
    live.make_summary()
    with atomic_dir(out) as tmp:
        save_checkpoint(model, tokenizer, tmp)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
