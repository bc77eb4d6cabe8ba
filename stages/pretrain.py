"""pretrain@<cond>-<seed>: GPT-2 from scratch on the corpus (mul tokens injected for mul_tokens),
or import of an existing checkpoint when `pretrain.import_from` is set."""

from transformers import AutoTokenizer, set_seed

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.data import read_jsonl
from deltalab.models import build_gpt2, configure_torch, load_causal_lm, save_checkpoint
from deltalab.tokens import inject_mul_tokens
from deltalab.train.logging import dvclive_callback, open_live
from deltalab.train.pretrain import pretrain


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    set_seed(seed)
    out = paths.checkpoint(cond, seed, "pretrain")
    cfg = params.pretrain
    live = open_live(paths.train_metrics("pretrain", cond, seed))
    if cfg.import_from:
        model, _ = load_causal_lm(
            cfg.import_from,
            revision=cfg.revision,
            trust_remote_code=params.runtime.trust_remote_code,
        )
        tokenizer = AutoTokenizer.from_pretrained(paths.TOKENIZER)
        model.resize_token_embeddings(len(tokenizer))
        live.summary["imported"] = 1
    else:
        tokenizer = AutoTokenizer.from_pretrained(paths.TOKENIZER)
        inject = inject_mul_tokens if cond == "mul_tokens" else (lambda text: text)
        train = [inject(r["text"]) for r in read_jsonl(paths.DATA / "corpus/train.jsonl", ["text"])]
        val = [inject(r["text"]) for r in read_jsonl(paths.DATA / "corpus/val.jsonl", ["text"])]
        model = build_gpt2(params.model, tokenizer, seed)
        losses = pretrain(
            model,
            tokenizer,
            train,
            val,
            cfg,
            params.runtime,
            seed,
            str(out),
            [dvclive_callback(live)],
        )
        live.summary.update({f"final/{k}": v for k, v in losses.items()})
    live.make_summary()
    with atomic_dir(out) as tmp:
        save_checkpoint(model, tokenizer, tmp)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
