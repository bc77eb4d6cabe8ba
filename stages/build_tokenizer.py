"""build_tokenizer: one vocabulary for both conditions (BPE + reserved filler + 45 mul tokens)."""

from deltalab import paths, stage
from deltalab.atomic import atomic_dir
from deltalab.data import read_jsonl
from deltalab.tokenizer import add_study_tokens, load_hub_tokenizer, train_bpe


def main(params) -> None:
    cfg = params.tokenizer
    if cfg.source == "hub":
        tokenizer = load_hub_tokenizer(cfg.hub_id, cfg.revision)
    else:
        corpus = read_jsonl(paths.dataset("corpus", "train"), required=["text"])
        tokenizer = train_bpe((row["text"] for row in corpus), cfg.vocab_size)
    tokenizer = add_study_tokens(tokenizer, cfg.pad_to_multiple_of)
    with atomic_dir(paths.TOKENIZER) as tmp:
        tokenizer.save_pretrained(tmp)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    print(f"vocabulary: {len(tokenizer)} ids (eos={eos}, pad={pad})")


if __name__ == "__main__":
    stage.run(main)
