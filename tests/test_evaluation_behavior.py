"""Behavior metrics: pass@k against brute force, per-question statistics, summaries, comparisons,
and the behavior stage end to end on four tiny checkpoints (deterministic, fails before writing)."""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from deltalab.config import parse_params
from deltalab.data.jsonl import write_jsonl
from deltalab.data.synthetic import generate_problems, gsm8k_rows
from deltalab.errors import CheckpointError, ConfigError, DataError
from deltalab.evaluation.behavior import (
    compare_models,
    distinct_ngram_ratio,
    k_values,
    majority_vote,
    pass_at_k,
    question_pass_at_k,
    question_record,
    summarize_model,
)
from deltalab.evaluation.generation import Generation
from deltalab.evaluation.params import BehaviorParams
from deltalab.evaluation.stats import paired_bootstrap_ci
from tests.tiny import tiny_raw

from .evaluation_fixtures import build_model, build_tokenizer

STAGES = Path(__file__).resolve().parents[1] / "stages"

# --------------------------------------------------------------------------- pass@k


def brute_force(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (the first c correct) holding a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def mismatches(estimator) -> list[tuple[int, int, int]]:
    return [
        (n, c, k)
        for n in range(1, 9)
        for c in range(n + 1)
        for k in range(1, n + 1)
        if not math.isclose(estimator(n, c, k), brute_force(n, c, k), abs_tol=1e-12)
    ]


def test_pass_at_k_equals_brute_force_enumeration() -> None:
    assert mismatches(pass_at_k) == []


def test_the_brute_force_check_catches_off_by_one_estimators() -> None:
    """Mutants of the product formula must fail the check above (so it can fail at all)."""

    def product(low_shift: int = 0, k_shift: int = 0):
        def estimator(n: int, c: int, k: int) -> float:
            if n - c < k:
                return 1.0
            terms = np.arange(n - c + 1 + low_shift, n + 1)
            return 1.0 - float(np.prod(1.0 - (k + k_shift) / np.maximum(terms, 1)))

        return estimator

    mutants = [
        product(low_shift=-1),  # one factor too many
        product(low_shift=1),  # one factor too few
        product(k_shift=-1),  # k - 1 instead of k
        lambda n, c, k: 1.0 if n - c <= k else pass_at_k(n, c, k),  # boundary off by one
        lambda n, c, k: 1.0 - math.comb(n - c, k) / math.comb(n + 1, k),  # C(n+1, k)
    ]
    for mutant in mutants:
        assert mismatches(mutant), mutant


def test_pass_at_k_edge_cases() -> None:
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 3, 6) == 1.0  # k > n - c: every 6-subset holds a correct sample
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert 0 < pass_at_k(1000, 1, 10) < 1  # large n: no overflowing binomials
    assert pass_at_k(1000, 1, 10) == pytest.approx(10 / 1000)
    for bad in ((8, 9, 1), (8, -1, 1), (8, 2, 0), (8, 2, 9)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_k_values() -> None:
    assert k_values(1) == [1]
    assert k_values(8) == [1, 2, 4, 8]
    assert k_values(6) == [1, 2, 4, 6]
    assert k_values(17) == [1, 2, 4, 8, 16, 17]


# --------------------------------------------------------------------------- per question


def test_distinct_ngram_ratio() -> None:
    assert distinct_ngram_ratio([[1, 2, 3], [1, 2, 4]]) == 3 / 4  # (1,2) twice
    assert distinct_ngram_ratio([[1, 2, 1, 2]]) == 2 / 3  # within one response too
    assert distinct_ngram_ratio([[1], []]) is None
    assert distinct_ngram_ratio([[5, 5, 5]], order=1) == 1 / 3


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first() -> None:
    assert majority_vote(["3", None, "4", "4", None, None]) == ("4", 2)
    assert majority_vote(["7", "5", "5", "7"]) == ("7", 2)
    assert majority_vote([None, None]) == (None, 0)


def gen(text: str, ids=(1, 2, 3), stopped: bool = True) -> Generation:
    return Generation(text=text, token_ids=tuple(ids), stopped=stopped)


def test_question_record() -> None:
    row = {"id": "q1", "question": "?", "gold": "12"}
    samples = [
        gen("so #### 12", (5, 6, 7, 0)),
        gen("then 12.0", (5, 6, 8, 0)),
        gen("no idea", (9, 9), stopped=False),
    ]
    rec = question_record("rlvr", row, gen("The answer is 11", (4, 0)), samples, -0.5, 1.25)
    assert rec["greedy_extracted"] == "11" and rec["greedy_correct"] is False
    assert rec["sample_extracted"] == ["12", "12", None]
    assert rec["sample_correct"] == [True, True, False]
    assert rec["majority_answer"] == "12" and rec["majority_correct"] is True
    assert rec["sample_tokens"] == [4, 4, 2] and rec["sample_stopped"] == [True, True, False]
    # bigrams without EOS: (5,6),(6,7) | (5,6),(6,8) | (9,9) -> 4 unique of 5
    assert rec["distinct_2"] == pytest.approx(4 / 5)
    assert (rec["greedy_logprob"], rec["greedy_entropy"]) == (-0.5, 1.25)
    json.dumps(rec)  # a JSONL line


def record(qid: str, greedy: bool, correct: list[bool], answers=None, **extra) -> dict:
    answers = answers or [("1" if c else "2") for c in correct]
    majority, _ = majority_vote(answers)
    return {
        "id": qid,
        "gold": "1",
        "greedy_extracted": "1" if greedy else "2",
        "greedy_correct": greedy,
        "greedy_stopped": True,
        "greedy_tokens": 10,
        "greedy_logprob": -1.0,
        "greedy_entropy": 2.0,
        "sample_extracted": answers,
        "sample_correct": correct,
        "sample_stopped": [True] * len(correct),
        "sample_tokens": [12] * len(correct),
        "majority_answer": majority,
        "majority_correct": majority == "1",
        "distinct_2": 0.5,
    } | extra


def test_summarize_model() -> None:
    records = [
        record("a", True, [True, True, False, False], distinct_2=None),
        record("b", False, [False, False, False, False], answers=[None, "3", "3", None]),
        record("c", False, [True, False, False, False], greedy_logprob=-3.0, greedy_tokens=4),
    ]
    m = summarize_model(records)
    assert m["greedy"] == {"accuracy": 1 / 3, "correct": 1, "total": 3, "no_answer_rate": 0.0}
    assert m["pass_at_k"] == pytest.approx(
        {"k1": (0.5 + 0 + 0.25) / 3, "k2": (5 / 6 + 0 + 0.5) / 3, "k4": 2 / 3}
    )
    assert m["diversity"] == pytest.approx(
        {"distinct_answers": (2 + 1 + 2) / 3, "distinct_2": 0.5, "no_answer_rate": 2 / 12}
    )
    # majority shares: a 2/4 (tie 1 vs 2, first is "1"), b 2/4 ("3"), c 3/4 ("2")
    assert m["confidence"] == pytest.approx(
        {
            "mean_logprob": -5 / 3,
            "mean_entropy": 2.0,
            "majority_share": (0.5 + 0.5 + 0.75) / 3,
            "majority_accuracy": 1 / 3,
        }
    )
    assert m["length"] == pytest.approx(
        {
            "greedy_tokens": 8.0,
            "greedy_stop_rate": 1.0,
            "sample_tokens": 12.0,
            "sample_stop_rate": 1,
        }
    )
    with pytest.raises(ValueError, match="same number"):
        summarize_model([*records, record("d", True, [True])])


def test_bootstrap_accepts_per_question_scores() -> None:
    rng = np.random.default_rng(0)
    ref, trt = rng.random(50), rng.random(50) + 0.2
    low, high = paired_bootstrap_ci(ref, trt, n_bootstrap=2000, seed=1)
    diff = float(trt.mean() - ref.mean())
    assert low < diff < high and high - low < 0.4
    # 0/1 floats give exactly the boolean result
    bools = rng.random((2, 40)) < 0.5
    assert paired_bootstrap_ci(*bools.astype(float), n_bootstrap=500) == paired_bootstrap_ci(
        *bools, n_bootstrap=500
    )


def test_compare_models() -> None:
    rng = random.Random(0)
    reference = [
        record(f"q{i}", rng.random() < 0.3, [rng.random() < 0.3 for _ in range(4)])
        for i in range(40)
    ]
    treatment = [
        record(f"q{i}", rng.random() < 0.6, [rng.random() < 0.6 for _ in range(4)])
        for i in range(40)
    ]
    c = compare_models(reference, treatment, n_bootstrap=1000, confidence=0.9, seed=0)
    assert set(c["pass_at_k"]) == {"k1", "k2", "k4"}
    for k in (1, 2, 4):
        block = c["pass_at_k"][f"k{k}"]
        expected = question_pass_at_k(treatment, k).mean() - question_pass_at_k(reference, k).mean()
        assert block["difference"] == pytest.approx(expected)
        assert block["questions_ci_low"] <= block["difference"] <= block["questions_ci_high"]
    g = c["greedy"]
    assert g["n"] == 40 and 0 <= g["mcnemar_p"] <= 1
    assert g["treatment_accuracy"] - g["reference_accuracy"] == pytest.approx(g["difference"])
    assert "questions resampled" in c["interval"] and "one seed" in c["interval"]
    same = compare_models(reference, reference, n_bootstrap=200, confidence=0.9, seed=0)
    for block in (same["greedy"], *same["pass_at_k"].values()):
        assert block["difference"] == block["questions_ci_low"] == block["questions_ci_high"] == 0.0
    with pytest.raises(ValueError, match="same questions"):
        compare_models(reference, treatment[::-1], n_bootstrap=200, confidence=0.9, seed=0)


def test_params() -> None:
    p = BehaviorParams(models=["a", "b"], pairs=[["b", "a"]])
    assert p.models == ["a", "b"] and p.samples == 8
    with pytest.raises(ValidationError, match="models"):
        BehaviorParams()  # which checkpoints is the study's to say: no default
    with pytest.raises(ValidationError, match="not in models"):
        BehaviorParams(models=["sft_tulu", "rlvr"], pairs=[["dpo", "rlvr"]])
    with pytest.raises(ValidationError, match="two different"):
        BehaviorParams(models=["rlvr"], pairs=[["rlvr", "rlvr"]])
    with pytest.raises(ValidationError):
        BehaviorParams(models=["sft_tulu", "sft_tulu"], pairs=[])
    with pytest.raises(ConfigError, match="behavior.pairs"):  # the study checks its pairs too
        parse_params(
            tiny_raw({"study": {"behavior": {"models": ["rlvr"], "pairs": [["dpo", "rlvr"]]}}})
        )
    assert (
        parse_params(
            tiny_raw({"behavior": {"temperature": 1, "questions": None}})
        ).behavior.questions
        is None
    )


# --------------------------------------------------------------------------- the stage

MODELS = ("sft_tulu", "sft_gsm8k", "rlvr", "dpo")
BEHAVIOR = {"questions": 6, "samples": 4, "max_new_tokens": 12, "batch_size": 16}
BEHAVIOR |= {"n_bootstrap": 200, "seed": 3}


def load_stage():
    sys.path.insert(0, str(STAGES))
    try:
        import behavior as stage  # stages/behavior.py
    finally:
        sys.path.remove(str(STAGES))
    return stage


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """models/baseline/seed0/<model>/ (four tiny GPT-2s) and data/prepared/gsm8k/test.jsonl."""
    root = tmp_path_factory.mktemp("behavior")
    tokenizer = build_tokenizer()
    for seed, name in enumerate(MODELS):
        model = build_model(tokenizer, seed=seed)
        model.save_pretrained(root / f"models/baseline/seed0/{name}")
        tokenizer.save_pretrained(root / f"models/baseline/seed0/{name}")
    rows = gsm8k_rows(generate_problems(random.Random(0), 10))
    write_jsonl(root / "data/prepared/gsm8k/test.jsonl", rows)
    return root


def outputs(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for folder in ("metrics", "reports")
        if (root / folder).exists()
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The stage sets torch's thread count (one thread: tiny models on a busy machine)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_stage(root: Path, monkeypatch, behavior=BEHAVIOR) -> dict[str, bytes]:
    monkeypatch.chdir(root)
    runtime = {"device": "cpu", "torch_threads": 1}
    params = parse_params(tiny_raw({"runtime": runtime, "behavior": behavior}))
    load_stage().main(params, "baseline", 0)
    return outputs(root)


def test_stage_end_to_end_and_deterministic(checkpoints, tmp_path, monkeypatch, capsys) -> None:
    first = run_stage(checkpoints, monkeypatch)
    assert set(first) == {
        "metrics/behavior/baseline-0.json",
        "metrics/plots/behavior/baseline-0/passk.csv",
        "reports/behavior/baseline-0/passk.png",
        "reports/behavior/baseline-0/report.md",
        "reports/behavior/baseline-0/samples.jsonl",
    }
    metrics = json.loads(first["metrics/behavior/baseline-0.json"])
    assert metrics["questions"] == 6 and metrics["samples"] == 4
    assert set(metrics) == {"models", "comparisons", "questions", "samples"}
    assert list(metrics["models"]) == sorted(MODELS)  # key-sorted JSON
    for model in MODELS:
        m = metrics["models"][model]
        assert set(m) == {"greedy", "pass_at_k", "diversity", "confidence", "length"}
        assert set(m["pass_at_k"]) == {"k1", "k2", "k4"}
        assert m["pass_at_k"]["k1"] <= m["pass_at_k"]["k2"] <= m["pass_at_k"]["k4"]
        assert m["confidence"]["mean_logprob"] < 0 < m["confidence"]["mean_entropy"]
        assert m["length"]["greedy_tokens"] <= 12
    assert set(metrics["comparisons"]) == {
        "rlvr_vs_sft_tulu",
        "sft_gsm8k_vs_sft_tulu",
        "dpo_vs_sft_gsm8k",
        "rlvr_vs_sft_gsm8k",
    }
    csv = first["metrics/plots/behavior/baseline-0/passk.csv"].decode().splitlines()
    assert csv[0] == "model,k,pass_at_k" and len(csv) == 1 + 4 * 3
    lines = first["reports/behavior/baseline-0/samples.jsonl"].decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 * 6 and [r["model"] for r in records[::6]] == list(MODELS)
    assert all(len(r["sample_extracted"]) == 4 for r in records)
    assert first["reports/behavior/baseline-0/passk.png"].startswith(b"\x89PNG")
    assert "rlvr vs sft_tulu" in first["reports/behavior/baseline-0/report.md"].decode()
    assert "baseline/seed0/rlvr: greedy" in capsys.readouterr().out

    # same params and seed: byte-identical outputs
    assert run_stage(checkpoints, monkeypatch) == first
    # another sampling seed changes the samples, not the greedy answers
    other = run_stage(checkpoints, monkeypatch, BEHAVIOR | {"seed": 4})
    key = "reports/behavior/baseline-0/samples.jsonl"
    assert other[key] != first[key]
    assert [json.loads(x)["greedy_response"] for x in other[key].decode().splitlines()] == [
        r["greedy_response"] for r in records
    ]


def test_missing_checkpoint_fails_before_writing(checkpoints, tmp_path, monkeypatch) -> None:
    root = tmp_path / "repo"
    (root / "models/baseline/seed0").mkdir(parents=True)
    for name in ("sft_tulu", "sft_gsm8k", "dpo"):  # rlvr is missing
        (root / f"models/baseline/seed0/{name}").symlink_to(
            checkpoints / f"models/baseline/seed0/{name}"
        )
    (root / "data").symlink_to(checkpoints / "data")
    with pytest.raises(CheckpointError, match=r"models/baseline/seed0/rlvr: checkpoint directory"):
        run_stage(root, monkeypatch)
    assert outputs(root) == {}

    # through stage.run: one clear line, exit code 2
    runtime = {"device": "cpu", "torch_threads": 1}
    (root / "params.yaml").write_text(yaml.safe_dump({"runtime": runtime, "behavior": BEHAVIOR}))
    monkeypatch.setattr(sys, "argv", ["behavior.py", "--cond", "baseline", "--seed", "0"])
    stage = load_stage()
    with pytest.raises(SystemExit) as exit_info:
        stage.stage.run(stage.main, cond=str, seed=int)
    assert exit_info.value.code == 2
    assert outputs(root) == {}


def test_missing_test_set_and_nan_checkpoint(checkpoints, tmp_path, monkeypatch) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "models").symlink_to(checkpoints / "models")
    with pytest.raises(DataError, match="gsm8k/test.jsonl: file not found"):
        run_stage(root, monkeypatch)
    # a checkpoint whose weights are NaN: a CheckpointError naming it, nothing written
    (root / "models").unlink()
    (root / "data").symlink_to(checkpoints / "data")
    for name in MODELS:
        src = checkpoints / f"models/baseline/seed0/{name}"
        (root / "models/baseline/seed0").mkdir(parents=True, exist_ok=True)
        (root / f"models/baseline/seed0/{name}").symlink_to(src)
    (root / "models/baseline/seed0/dpo").unlink()
    tokenizer = build_tokenizer()
    broken = build_model(tokenizer, seed=9)
    with torch.no_grad():
        broken.transformer.ln_f.weight.fill_(float("nan"))
    broken.save_pretrained(root / "models/baseline/seed0/dpo")
    tokenizer.save_pretrained(root / "models/baseline/seed0/dpo")
    with pytest.raises(CheckpointError, match=r"seed0/dpo: .*NaN"):
        run_stage(root, monkeypatch)
    assert outputs(root) == {}


def test_checkpoints_with_other_tokenizers_are_not_compared(checkpoints, tmp_path, monkeypatch):
    """A Llama and a Qwen base once gave paired statistics: now the stage stops, naming both."""
    root = tmp_path / "repo"
    (root / "models/baseline/seed0").mkdir(parents=True)
    (root / "data").symlink_to(checkpoints / "data")
    for name in MODELS:
        (root / f"models/baseline/seed0/{name}").symlink_to(
            checkpoints / f"models/baseline/seed0/{name}"
        )
    (root / "models/baseline/seed0/rlvr").unlink()
    other = build_tokenizer(vocab_size=380)  # another vocabulary, same model shape otherwise
    build_model(other, seed=5).save_pretrained(root / "models/baseline/seed0/rlvr")
    other.save_pretrained(root / "models/baseline/seed0/rlvr")
    with pytest.raises(CheckpointError, match=r"seed0/rlvr: its tokenizer's vocabulary differs"):
        run_stage(root, monkeypatch)
    assert outputs(root) == {}
