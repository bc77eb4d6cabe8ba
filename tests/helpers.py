"""Small offline fixtures shared by the foundation tests (no network, seconds to build)."""

from __future__ import annotations

import random

from deltalab.data.synthetic import corpus_rows, generate_problems, tulu_rows
from deltalab.tokenizer import add_study_tokens, train_bpe


def tiny_tokenizer(vocab_size: int = 400):
    rng = random.Random(0)
    problems = generate_problems(rng, 50)
    texts = [r["text"] for r in corpus_rows(rng, 200, problems)]
    texts += [m["content"] for r in tulu_rows(rng, 100, "t") for m in r["messages"]]
    return add_study_tokens(train_bpe(texts, vocab_size))
