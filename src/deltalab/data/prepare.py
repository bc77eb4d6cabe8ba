"""The prepare_data stage's logic: every dataset of the study into one directory of JSONL files."""

from __future__ import annotations

import json
import random
from pathlib import Path

from deltalab.data import synthetic
from deltalab.data.hub import load_hub_rows, preference_rows_from_messages
from deltalab.data.jsonl import write_jsonl
from deltalab.data.params import DataParams
from deltalab.errors import DataError

# file name -> description; the layout is a contract for the stages downstream
FILES = {
    "corpus/train.jsonl": "pretraining documents {id, text}",
    "corpus/val.jsonl": "held-out pretraining documents {id, text}",
    "tulu/train.jsonl": "chat SFT mixture {id, messages}",
    "tulu/val.jsonl": "chat SFT validation {id, messages}",
    "gsm8k/train.jsonl": "word problems {question, answer}",
    "gsm8k/test.jsonl": "held-out word problems {question, answer}",
    "probes.jsonl": "arithmetic probes {id, family, question, answer}",
    "prefs/train.jsonl": "preference pairs {prompt, chosen, rejected}",
    "rlvr/train.jsonl": "prompts with gold answers {prompt, answer}",
    "search/pool.jsonl": "DoTS query pool {id, question, answer}: never trained on or evaluated",
}


def gold_number(answer: str, dataset: str) -> str:
    """The number after GSM8K's final `####` marker (thousands separators dropped)."""
    if "####" not in answer:
        raise DataError(f"dataset {dataset!r}: a GSM8K answer without '#### N': {answer[-60:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def prepare(params: DataParams, out: Path) -> dict[str, int]:
    """Write every dataset under `out`; returns row counts per file."""
    rng = random.Random(params.seed)
    sizes = params.sizes
    counts: dict[str, int] = {}

    def put(name: str, rows: list[dict]) -> None:
        counts[name] = write_jsonl(out / name, rows)

    # Test problems first, then everything else is generated to exclude them.
    test = synthetic.generate_problems(rng, sizes.gsm8k_test)
    test_questions = {p.question for p in test}
    train = synthetic.generate_problems(rng, sizes.gsm8k_train, exclude=test_questions)
    held = test_questions | {p.question for p in train}
    extra = synthetic.generate_problems(rng, sizes.prefs + sizes.rlvr, exclude=held)
    prefs, rlvr = extra[: sizes.prefs], extra[sizes.prefs :]

    rlvr_rows = synthetic.rlvr_rows(rlvr)
    if params.source == "hub":
        assert params.gsm8k is not None
        if params.tulu is not None:
            tulu = load_hub_rows(params.tulu, ("messages",))
            tulu = [row | {"id": row.get("id", f"tulu-{i:07d}")} for i, row in enumerate(tulu)]
        else:  # a study that does no chat SFT (e.g. analysis of imported checkpoints)
            tulu = synthetic.tulu_rows(rng, sizes.tulu_val + sizes.tulu_train, "tulu")
        n_val = params.tulu_val_size if params.tulu is not None else sizes.tulu_val
        put("tulu/val.jsonl", tulu[:n_val])
        put("tulu/train.jsonl", tulu[n_val:])
        gsm8k_train = load_hub_rows(params.gsm8k, ("question", "answer"))
        gsm8k_test = load_hub_rows(
            params.gsm8k.model_copy(update={"split": "test", "limit": None}), ("question", "answer")
        )
        if params.search_pool is not None:
            source = load_hub_rows(params.search_pool, ("question", "answer"))[: sizes.search]
        else:  # off the end of the train split: no stage trains on it
            n_pool = min(sizes.search, len(gsm8k_train) // 10)
            source = gsm8k_train[len(gsm8k_train) - n_pool :]
            gsm8k_train = gsm8k_train[: len(gsm8k_train) - n_pool]
        pool = [
            {"id": f"search-{i:05d}", "question": r["question"], "answer": r["answer"]}
            for i, r in enumerate(source)
        ]
        put("gsm8k/train.jsonl", gsm8k_train)
        put("gsm8k/test.jsonl", gsm8k_test)
        if params.rlvr_prompts == "gsm8k":  # RLVR prompts with verifiable gold answers
            rlvr_rows = [
                {"prompt": r["question"], "answer": gold_number(r["answer"], params.gsm8k.name)}
                for r in gsm8k_train[: sizes.rlvr]
            ]
        corpus_problems = train
    else:
        put("tulu/train.jsonl", synthetic.tulu_rows(rng, sizes.tulu_train, "tulu-train"))
        put("tulu/val.jsonl", synthetic.tulu_rows(rng, sizes.tulu_val, "tulu-val"))
        put("gsm8k/train.jsonl", synthetic.gsm8k_rows(train))
        put("gsm8k/test.jsonl", synthetic.gsm8k_rows(test))
        corpus_problems = train
        # Drawn after everything else from its own generator: adding the pool left every other
        # file byte-identical. Disjoint from all problems above.
        pool_rng = random.Random(f"{params.seed}-search-pool")
        taken = held | {p.question for p in extra}
        pool = [
            {"id": f"search-{i:05d}"} | row
            for i, row in enumerate(
                synthetic.gsm8k_rows(synthetic.generate_problems(pool_rng, sizes.search, taken))
            )
        ]

    corpus = synthetic.corpus_rows(rng, sizes.corpus_documents, corpus_problems)
    n_val = max(1, len(corpus) // 20)
    put("corpus/train.jsonl", corpus[n_val:])
    put("corpus/val.jsonl", corpus[:n_val])
    put("probes.jsonl", synthetic.probe_rows(rng))
    if params.prefs is not None:
        put("prefs/train.jsonl", preference_rows_from_messages(params.prefs)[: sizes.prefs])
    else:
        put("prefs/train.jsonl", synthetic.preference_rows(rng, prefs))
    put("rlvr/train.jsonl", rlvr_rows)
    put("search/pool.jsonl", pool)
    (out / "manifest.json").write_text(
        json.dumps({"files": FILES, "rows": counts}, indent=2, sort_keys=True) + "\n"
    )
    return counts
