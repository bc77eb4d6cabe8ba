"""Scoring, metrics, data validation and checkpoint loading of the evaluate stage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from deltalab.errors import CheckpointError, DataError
from deltalab.evaluation.generation import Generation
from deltalab.evaluation.params import EvaluateParams
from deltalab.evaluation.scoring import (
    evaluate_checkpoint,
    load_gsm8k,
    metrics_from_predictions,
    prepare_gsm8k_rows,
    prepare_probe_rows,
    read_jsonl,
    score,
)
from deltalab.models import load_causal_lm

from .evaluation_fixtures import save_checkpoint

GSM8K_ROWS = [
    {"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": "3*4=12\n#### 12"},
    {"question": "A car costs $1,200 and a bike $300. Total?", "answer": "#### 1,500"},
    {"question": "It is 2 degrees and drops 7. Temperature?", "answer": "2-7=-5\n#### -5"},
]
PROBE_ROWS = [
    {"id": "tt-6-9", "family": "times_table", "question": "What is 6 times 9?", "answer": "54"},
    {"id": "tt-2-3", "family": "times_table", "question": "What is 2 times 3?", "answer": "6"},
    {"id": "tbo-12-3", "family": "two_by_one", "question": "What is 12 times 3?", "answer": "36"},
    {"id": "add-5-7", "family": "addition", "question": "What is 5 plus 7?", "answer": "12"},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "sft_gsm8k")


def gen(text: str, n: int, stopped: bool) -> Generation:
    return Generation(text=text, token_ids=tuple(range(n)), stopped=stopped)


def test_gsm8k_rows_get_ids_and_gold() -> None:
    rows = prepare_gsm8k_rows(GSM8K_ROWS)
    assert [r["id"] for r in rows] == ["gsm8k-00000", "gsm8k-00001", "gsm8k-00002"]
    assert [r["gold"] for r in rows] == ["12", "1500", "-5"]
    assert prepare_gsm8k_rows([{**GSM8K_ROWS[0], "id": "q7"}])[0]["id"] == "q7"
    assert len(prepare_gsm8k_rows(GSM8K_ROWS, limit=2)) == 2


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "empty GSM8K test set"),
        ([{"question": "q"}], "'answer' must be a string"),
        ([{"question": "q", "answer": "no marker"}], "####"),
        ([{**GSM8K_ROWS[0], "id": "a"}, {**GSM8K_ROWS[1], "id": "a"}], "duplicate id 'a'"),
    ],
)
def test_bad_gsm8k_rows(rows, message) -> None:
    with pytest.raises(DataError, match=message):
        prepare_gsm8k_rows(rows, source="data/gsm8k_test.jsonl")


def test_bad_probe_rows() -> None:
    with pytest.raises(DataError, match="unknown probe family 'division'"):
        prepare_probe_rows([{**PROBE_ROWS[0], "family": "division"}])
    with pytest.raises(DataError, match="'answer' must be a number"):
        prepare_probe_rows([{**PROBE_ROWS[0], "answer": "fifty"}])
    with pytest.raises(DataError, match="empty probe set"):
        prepare_probe_rows([])


def test_read_jsonl_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        read_jsonl(missing)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "#### 1"}\n{oops\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}:2: invalid JSON"):
        read_jsonl(bad)
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match="expected a JSON object"):
        read_jsonl(tmp_path / "list.jsonl")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match=rf"{re.escape(str(empty))}: empty GSM8K test set"):
        load_gsm8k(empty)


def test_score_and_metrics_from_known_generations() -> None:
    gsm8k = prepare_gsm8k_rows(GSM8K_ROWS)
    probes = prepare_probe_rows(PROBE_ROWS)
    records = score(
        gsm8k,
        [
            gen(" 3*4=12\n#### 12", 8, True),  # right
            gen(" 1,200+300=1,500. The answer is $1,500.", 12, True),  # right, with $ and ,
            gen(" 2-7=5 5 5 5 5", 20, False),  # wrong, ran to the limit
        ],
        "gsm8k",
    ) + score(
        probes,
        [
            gen(" <MUL_6_9_54>", 2, True),  # right: the token decodes to 6*9=54
            gen(" 5", 2, True),  # wrong
            gen(" 36", 2, True),  # right
            gen(" I like cats", 4, False),  # no answer
        ],
        "probes",
    )
    first = records[0]
    assert first == {
        "id": "gsm8k-00000",
        "task": "gsm8k",
        "family": "gsm8k",
        "response": " 3*4=12\n#### 12",
        "extracted": "12",
        "gold": "12",
        "correct": True,
        "stopped": True,
        "num_tokens": 8,
        "mul_tokens": 0,
    }
    metrics = metrics_from_predictions(records)
    g = metrics["gsm8k"]
    assert (g["correct"], g["total"]) == (2, 3)
    assert g["accuracy"] == pytest.approx(2 / 3)
    assert g["stop_rate"] == pytest.approx(2 / 3)
    assert g["mean_response_tokens"] == pytest.approx(40 / 3)
    assert g["mul_token_rate"] == 0.0
    p = metrics["probes"]
    assert (p["accuracy"], p["correct"], p["total"]) == (0.5, 2, 4)
    assert p["mul_token_rate"] == 0.25 and p["no_answer_rate"] == 0.25
    assert p["times_table"]["accuracy"] == 0.5
    assert p["two_by_one"]["accuracy"] == 1.0
    assert p["addition"]["accuracy"] == 0.0


def test_evaluate_checkpoint_writes_metrics_and_predictions(tmp_path: Path, checkpoint) -> None:
    gsm8k = write_jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)
    probes = write_jsonl(tmp_path / "probes.jsonl", PROBE_ROWS)
    metrics_path = tmp_path / "metrics" / "baseline" / "seed0" / "sft_gsm8k.json"
    predictions_path = tmp_path / "predictions" / "sft_gsm8k.jsonl"
    params = EvaluateParams(max_new_tokens=6, probes_max_new_tokens=3, batch_size=2)
    result = evaluate_checkpoint(
        checkpoint, gsm8k, probes, metrics_path, predictions_path, params, progress=False
    )
    metrics = json.loads(metrics_path.read_text())
    assert metrics == result.metrics
    for key in ("accuracy", "correct", "total", "stop_rate", "mean_response_tokens"):
        assert key in metrics["gsm8k"]
    assert metrics["gsm8k"]["total"] == 3 and metrics["probes"]["total"] == 4
    assert set(metrics["probes"]) >= {"accuracy", "times_table", "two_by_one", "addition"}
    lines = [json.loads(x) for x in predictions_path.read_text().splitlines()]
    assert [r["id"] for r in lines] == [
        "gsm8k-00000",
        "gsm8k-00001",
        "gsm8k-00002",
        *(r["id"] for r in PROBE_ROWS),
    ]
    assert all(r["num_tokens"] <= (6 if r["task"] == "gsm8k" else 3) for r in lines)
    assert metrics_from_predictions(lines) == metrics  # metrics are a function of predictions

    # limits and probes off
    small = EvaluateParams(max_new_tokens=2, gsm8k_limit=2, probes=False)
    result = evaluate_checkpoint(
        checkpoint, gsm8k, None, metrics_path, predictions_path, small, progress=False
    )
    assert result.metrics["gsm8k"]["total"] == 2 and "probes" not in result.metrics


def _expect_failure(tmp_path: Path, checkpoint: Path, gsm8k: Path, match: str) -> None:
    metrics_path = tmp_path / "out" / "m.json"
    predictions_path = tmp_path / "out" / "p.jsonl"
    params = EvaluateParams(max_new_tokens=2, probes=False)
    with pytest.raises((CheckpointError, DataError), match=re.escape(match)):
        evaluate_checkpoint(
            checkpoint, gsm8k, None, metrics_path, predictions_path, params, progress=False
        )
    assert not metrics_path.exists() and not predictions_path.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_inputs_fail_clearly_and_write_nothing(tmp_path: Path, checkpoint) -> None:
    gsm8k = write_jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)
    missing = tmp_path / "models" / "missing"
    _expect_failure(tmp_path, missing, gsm8k, f"{missing}: checkpoint directory not found")

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    _expect_failure(tmp_path, no_config, gsm8k, "no config.json")

    from transformers import ViTConfig

    vit = tmp_path / "vit"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(vit)
    _expect_failure(tmp_path, vit, gsm8k, f"{vit}: not a loadable causal language model")

    no_weights = tmp_path / "no_weights"
    shutil.copytree(checkpoint, no_weights)
    (no_weights / "model.safetensors").unlink()
    _expect_failure(tmp_path, no_weights, gsm8k, f"{no_weights}: not a loadable causal")

    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    _expect_failure(tmp_path, checkpoint, empty, f"{empty}: empty GSM8K test set")
    _expect_failure(
        tmp_path,
        checkpoint,
        tmp_path / "absent.jsonl",
        f"{tmp_path / 'absent.jsonl'}: file not found",
    )


def test_partial_checkpoint_is_rejected(tmp_path: Path, checkpoint) -> None:
    import safetensors.torch

    partial = tmp_path / "partial"
    shutil.copytree(checkpoint, partial)
    weights = safetensors.torch.load_file(partial / "model.safetensors")
    del weights["transformer.h.0.attn.c_attn.weight"]
    safetensors.torch.save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"1 weights missing.*h\.0\.attn\.c_attn\.weight"):
        load_causal_lm(partial)


def test_cli_exit_codes_and_outputs(tmp_path: Path, checkpoint, capsys) -> None:
    from deltalab.evaluation.cli import main

    gsm8k = write_jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)
    probes = write_jsonl(tmp_path / "probes.jsonl", PROBE_ROWS)
    out = tmp_path / "out"
    common = ["--gsm8k", str(gsm8k), "--metrics", str(out / "m.json")]
    common += ["--predictions", str(out / "p.jsonl"), "--max-new-tokens", "3", "--device", "cpu"]
    assert main(["evaluate", str(tmp_path / "nope"), *common]) == 2
    assert f"{tmp_path / 'nope'}: checkpoint directory not found" in capsys.readouterr().err
    assert not out.exists()

    assert main(["evaluate", str(checkpoint), *common, "--probes", str(probes)]) == 0
    assert json.loads((out / "m.json").read_text())["probes"]["total"] == 4
    capsys.readouterr()
    assert main(["compare-predictions", str(out / "p.jsonl"), str(out / "p.jsonl")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gsm8k"]["difference"] == 0 and result["gsm8k"]["mcnemar_p"] == 1
