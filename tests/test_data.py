"""Synthetic datasets: formats of the real datasets, determinism, no train/test overlap."""

import json
import random
import re

import pytest

from deltalab.data import read_jsonl, write_jsonl
from deltalab.data.hub import load_hub_rows
from deltalab.data.params import DataParams, HubDataset, SyntheticSizes
from deltalab.data.prepare import FILES, prepare
from deltalab.data.synthetic import generate_problems, preference_rows
from deltalab.errors import DataError

SIZES = SyntheticSizes(
    corpus_documents=300,
    tulu_train=100,
    tulu_val=20,
    gsm8k_train=300,
    gsm8k_test=60,
    prefs=30,
    rlvr=30,
)
ANNOTATION = re.compile(r"<<(\d+)([*+-])(\d+)=(\d+)>>")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare(DataParams(sizes=SIZES, seed=7), out)
    return out


def test_all_files_with_requested_sizes(prepared):
    for name in FILES:
        assert (prepared / name).is_file(), name
    assert len(read_jsonl(prepared / "gsm8k/train.jsonl")) == 300
    assert len(read_jsonl(prepared / "gsm8k/test.jsonl")) == 60
    assert len(read_jsonl(prepared / "tulu/train.jsonl")) == 100
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["rows"]["prefs/train.jsonl"] == 30


def test_train_and_test_never_share_a_question(prepared):
    train = {r["question"] for r in read_jsonl(prepared / "gsm8k/train.jsonl")}
    test = {r["question"] for r in read_jsonl(prepared / "gsm8k/test.jsonl")}
    assert len(test) == 60 and not train & test
    rlvr = {r["prompt"] for r in read_jsonl(prepared / "rlvr/train.jsonl")}
    prefs = {r["prompt"] for r in read_jsonl(prepared / "prefs/train.jsonl")}
    assert not (rlvr | prefs) & test
    corpus = "\n".join(r["text"] for r in read_jsonl(prepared / "corpus/train.jsonl"))
    assert not any(q in corpus for q in test)


def test_probe_questions_are_never_trained_on(prepared):
    probes = [r["question"] for r in read_jsonl(prepared / "probes.jsonl")]
    tulu_users = {
        m["content"]
        for split in ("train", "val")
        for r in read_jsonl(prepared / f"tulu/{split}.jsonl")
        for m in r["messages"]
        if m["role"] == "user"
    }
    corpus = "\n".join(r["text"] for r in read_jsonl(prepared / "corpus/train.jsonl"))
    assert not tulu_users & set(probes)
    assert not any(q in corpus for q in probes)
    # ...while the facts themselves are taught, in other phrasings
    assert any(re.fullmatch(r"How much is \d times \d\?", u) for u in tulu_users)
    grounded = re.findall(r"\b(\d) times (\d) (?:is|means) (\d)\*(\d)=(\d+)", corpus)
    assert len(grounded) > 100
    assert all(a == x and b == y and int(c) == int(a) * int(b) for a, b, x, y, c in grounded)


def test_gsm8k_format_and_correct_annotations(prepared):
    for row in read_jsonl(prepared / "gsm8k/train.jsonl", ["question", "answer"]):
        *steps, final = row["answer"].split("\n")
        assert re.fullmatch(r"#### \d+", final)
        results = []
        for line in steps:
            ((a, op, b, c),) = ANNOTATION.findall(line)
            a, b, c = int(a), int(b), int(c)
            assert c == {"*": a * b, "+": a + b, "-": a - b}[op]
            results.append(c)
        assert final == f"#### {results[-1]}"


def test_tulu_messages_format(prepared):
    for row in read_jsonl(prepared / "tulu/train.jsonl", ["messages", "id"]):
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] and all(m["content"] for m in row["messages"])


def test_probe_families(prepared):
    probes = read_jsonl(prepared / "probes.jsonl", ["id", "family", "question", "answer"])
    counts = {
        f: sum(p["family"] == f for p in probes) for f in ("times_table", "two_by_one", "addition")
    }
    assert counts == {"times_table": 81, "two_by_one": 100, "addition": 100}
    assert len({p["id"] for p in probes}) == len(probes)
    for p in probes:
        a, b = map(int, re.findall(r"\d+", p["question"]))
        expected = a + b if p["family"] == "addition" else a * b
        assert p["answer"] == str(expected)
        if p["family"] == "addition":
            assert expected <= 100


def test_preference_pairs_differ_in_one_step():
    problems = generate_problems(random.Random(3), 40)
    for row, problem in zip(preference_rows(random.Random(4), problems), problems, strict=True):
        assert row["chosen"] == problem.solution() and row["rejected"] != row["chosen"]
        chosen, rejected = row["chosen"].split("\n"), row["rejected"].split("\n")
        first_diff = next(
            i for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)) if c != r
        )
        # the wrong step is arithmetically wrong; the rest of the chain follows from it
        ((a, op, b, c),) = ANNOTATION.findall(rejected[first_diff])
        assert int(c) != {"*": int(a) * int(b), "+": int(a) + int(b), "-": int(a) - int(b)}[op]


def test_same_seed_same_bytes(tmp_path):
    prepare(DataParams(sizes=SIZES, seed=7), tmp_path / "a")
    prepare(DataParams(sizes=SIZES, seed=7), tmp_path / "b")
    prepare(DataParams(sizes=SIZES, seed=8), tmp_path / "c")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/gsm8k/test.jsonl").read_bytes() != (
        tmp_path / "c/gsm8k/test.jsonl"
    ).read_bytes()


def test_read_jsonl_errors(tmp_path):
    with pytest.raises(DataError, match="missing.jsonl: file not found"):
        read_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(bad)
    write_jsonl(bad, [{"question": "q"}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing field\(s\) \['answer'\]"):
        read_jsonl(bad, ["question", "answer"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no records"):
        read_jsonl(empty)


def _write_hub_layout(root, config, splits):
    """A local directory laid out like a hub dataset repo: parquet shards per split and the
    dataset card's `configs:` metadata (how openai/gsm8k declares its `main` config)."""
    import pandas as pd

    card = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, rows in splits.items():
        path = root / (config or "data") / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path)
        card += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    if config:  # the default config (allenai/tulu-3-sft-mixture) needs no card: data/<split>-*
        (root / "README.md").write_text("\n".join([*card, "---", ""]))


def test_hub_loaders_on_local_files_in_hub_format(tmp_path):
    gsm = tmp_path / "gsm8k"
    _write_hub_layout(
        gsm,
        "main",
        {
            "train": [{"question": f"q{i}", "answer": f"a\n#### {i}"} for i in range(10)],
            "test": [{"question": f"t{i}", "answer": f"a\n#### {i}"} for i in range(4)],
        },
    )
    tulu = tmp_path / "tulu"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    _write_hub_layout(
        tulu,
        None,
        {"train": [{"id": f"x{i}", "messages": messages, "source": "s"} for i in range(12)]},
    )
    params = DataParams(
        source="hub",
        sizes=SIZES,
        tulu_val_size=2,
        tulu=HubDataset(name=str(tulu), limit=8),
        gsm8k=HubDataset(name=str(gsm), config="main"),
    )
    out = tmp_path / "prepared"
    prepare(params, out)
    assert len(read_jsonl(out / "gsm8k/test.jsonl")) == 4
    # the DoTS query pool comes off the end of the train split (at most a tenth of it)
    assert len(read_jsonl(out / "gsm8k/train.jsonl")) == 9
    pool = read_jsonl(out / "search/pool.jsonl")
    assert [(r["id"], r["question"]) for r in pool] == [("search-00000", "q9")]
    train = read_jsonl(out / "tulu/train.jsonl", ["id", "messages"])
    assert len(train) == 6 and train[0]["messages"] == messages
    assert len(read_jsonl(out / "tulu/val.jsonl")) == 2


def test_hub_loader_error_names_dataset(tmp_path):
    spec = HubDataset(name=str(tmp_path / "nothing-here"))
    with pytest.raises(DataError, match="nothing-here"):
        load_hub_rows(spec, ("question",))
