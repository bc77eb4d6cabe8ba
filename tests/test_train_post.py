"""The post-training stages (DPO, RLVR) on tiny offline models: data validation, the verifiable
reward, the delta-track guard, and each stage's recipe run end to end in a temporary directory."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltalab import paths
from deltalab.config import parse_params
from deltalab.data.jsonl import write_jsonl
from deltalab.data.preferences import load_preference_rows
from deltalab.data.synthetic import generate_problems, preference_rows, rlvr_rows
from deltalab.errors import ConfigError, DataError
from deltalab.models import build_gpt2, load_model, save_checkpoint
from deltalab.train.grpo import RewardGuard, load_rlvr_rows, reward_by_fifth, verifiable_reward
from deltalab.train.recipe import TrainingRun
from tests.helpers import tiny_tokenizer
from tests.tiny import tiny_raw

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- data validation


def test_preference_rows_name_the_file_and_row(tmp_path):
    path = tmp_path / "prefs.jsonl"
    good = {"prompt": "q", "chosen": "a #### 1", "rejected": "b #### 2"}
    write_jsonl(path, [good, good | {"rejected": "  "}])
    with pytest.raises(DataError, match=r"prefs.jsonl: row 1: field 'rejected'"):
        load_preference_rows(path)
    write_jsonl(path, [good, {"prompt": "q", "chosen": "a"}])
    with pytest.raises(DataError, match=r"prefs.jsonl:2: missing field\(s\) \['rejected'\]"):
        load_preference_rows(path)
    write_jsonl(path, [good | {"rejected": good["chosen"]}])
    with pytest.raises(DataError, match="row 0: chosen and rejected are identical"):
        load_preference_rows(path)
    write_jsonl(path, [good])
    assert load_preference_rows(path) == [good]


def test_rlvr_rows_need_a_numeric_gold_answer(tmp_path):
    path = tmp_path / "rlvr.jsonl"
    write_jsonl(path, [{"prompt": "q1", "answer": "1,200"}, {"prompt": "q2", "answer": "seven"}])
    with pytest.raises(DataError, match=r"rlvr.jsonl: row 1: gold answer 'seven' is not a number"):
        load_rlvr_rows(path)
    write_jsonl(path, [{"prompt": "q1", "answer": "1,200"}, {"prompt": " ", "answer": "3"}])
    with pytest.raises(DataError, match="row 1: field 'prompt'"):
        load_rlvr_rows(path)
    write_jsonl(path, [{"prompt": "q1", "answer": "1,200"}])
    assert load_rlvr_rows(path) == [{"prompt": "q1", "answer": "1200"}]


def test_verifiable_reward_is_exact_match_of_the_extracted_answer():
    completions = [
        " 3*4 = <<3*4=12>>12\n#### 12",  # right
        " 3*4 = <<3*4=12>>12\n#### 13",  # the marker decides, not an earlier right number
        " The answer is 12.0",  # numeric match
        " I do not know",  # no number
        " <MUL_3_4_12>",  # a mul token decodes to 3*4=12: its result
        " #### 120",
    ]
    rewards = verifiable_reward(completions, ["12"] * 6, prompts=["p"] * 6)
    assert rewards == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_nan_reward_stops_the_run():
    class State:
        global_step = 7

    with pytest.raises(DataError, match="step 7: the mean reward is nan"):
        RewardGuard().on_log(None, State(), None, logs={"reward": float("nan")})
    RewardGuard().on_log(None, State(), None, logs={"reward": 0.5, "loss": 1.0})


def test_reward_by_fifth_splits_steps_evenly():
    history = [{"step": s, "reward": float(s)} for s in range(5, 101, 5)] + [{"step": 100}]
    fifths = reward_by_fifth(history, 100)
    # steps 5..20 | 25..40 | ... | 85..100
    assert fifths == [12.5, 32.5, 52.5, 72.5, 92.5]
    assert reward_by_fifth([{"step": 1, "reward": 1.0}], 100)[0] == 1.0
    assert math.isnan(reward_by_fifth([{"step": 1, "reward": 1.0}], 100)[4])


# ----------------------------------------------------------------------------- delta track params


def test_delta_track_members_must_exist():
    with pytest.raises(ConfigError, match=r"delta_track.seeds: 3 is not in seeds \[0, 1\]"):
        parse_params(tiny_raw({"seeds": [0, 1], "delta_track": {"seeds": [3]}}))
    with pytest.raises(ConfigError, match="delta_track.conditions: 'mul_tokens' is not in"):
        parse_params(
            tiny_raw({"conditions": ["baseline"], "delta_track": {"conditions": ["mul_tokens"]}})
        )
    assert parse_params(
        tiny_raw({"seeds": [0, 1], "delta_track": {"seeds": [1]}})
    ).delta_track.seeds == [1]


def test_rlvr_batch_holds_whole_groups():
    with pytest.raises(ConfigError, match=r"rlvr.batch_size \(60\) must be a multiple"):
        parse_params(tiny_raw({"rlvr": {"batch_size": 60, "num_generations": 16}}))


# ----------------------------------------------------------------------------- stage recipes


def _load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRAIN = {
    "max_steps": 4,
    "batch_size": 4,
    "learning_rate": 1.0e-3,
    "warmup_ratio": 0.0,
    "logging_steps": 1,
    "eval_steps": 2,
}


@pytest.fixture(scope="module")
def tiny_workspace(tmp_path_factory):
    """A directory laid out like the pipeline's: data, an sft_tulu and an sft_gsm8k checkpoint."""
    root = tmp_path_factory.mktemp("post")
    tokenizer = tiny_tokenizer()
    rng = random.Random(0)
    problems = generate_problems(rng, 40)
    write_jsonl(root / paths.DATA / "prefs/train.jsonl", preference_rows(rng, problems[:20]))
    write_jsonl(root / paths.DATA / "rlvr/train.jsonl", rlvr_rows(problems[20:]))
    model_params = parse_params(
        tiny_raw({"model": {"n_layer": 1, "n_head": 2, "n_embd": 32}})
    ).model
    for stage in ("sft_tulu", "sft_gsm8k"):
        model = build_gpt2(model_params, tokenizer, seed=len(stage))
        save_checkpoint(model, tokenizer, root / paths.checkpoint("baseline", 0, stage))
    return root


def _params(**sections):
    return parse_params(
        tiny_raw(
            {
                "model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
                "runtime": {"device": "cpu", "torch_threads": 1},
                **sections,
            }
        )
    )


def test_dpo_stage_trains_against_a_frozen_parent_and_saves_moments(tiny_workspace, monkeypatch):
    monkeypatch.chdir(tiny_workspace)
    params = _params(dpo=TRAIN | {"max_length": 128, "val_fraction": 0.2})
    _load_stage("dpo").main(params, "dpo", "baseline", 0)

    out = paths.checkpoint("baseline", 0, "dpo")
    parent = load_model(paths.checkpoint("baseline", 0, "sft_gsm8k"))
    trained = load_model(out)
    moved = [
        n
        for (n, p), (_, q) in zip(
            parent.named_parameters(), trained.named_parameters(), strict=True
        )
        if not torch.equal(p, q)
    ]
    assert moved, "DPO changed no weight"
    exp_avg = load_file(paths.exp_avg("baseline", 0, "dpo"))
    named = dict(trained.named_parameters())
    assert set(exp_avg) == set(named)  # tied lm_head shares the embedding's entry
    assert all(exp_avg[n].shape == named[n].shape for n in exp_avg)
    assert all(exp_avg[n].abs().sum() > 0 for n in moved)
    summary = json.loads((paths.train_metrics("dpo", "baseline", 0) / "metrics.json").read_text())
    assert summary["final/val_pairs"] == 4
    assert 0.0 <= summary["final/eval_rewards/accuracies"] <= 1.0
    assert summary["step"] == 4
    assert (paths.train_metrics("dpo", "baseline", 0) / "plots/metrics/eval/loss.tsv").is_file()
    assert not list(out.parent.glob(".*tmp*"))  # nothing half-written left behind
    assert not list(paths.train_metrics("dpo", "baseline", 0).parent.glob(".*tmp*"))

    # a rerun is byte-identical, optimizer moments included
    first = paths.exp_avg("baseline", 0, "dpo").read_bytes()
    _load_stage("dpo").main(params, "dpo", "baseline", 0)
    assert paths.exp_avg("baseline", 0, "dpo").read_bytes() == first

    # prompts longer than max_length leave TRL nothing to train on: a clear error, nothing written
    short = _params(dpo=TRAIN | {"max_length": 4, "val_fraction": 0.2})
    with pytest.raises(DataError, match=r"max_length=4: every one of the 16 training pairs"):
        _load_stage("dpo").main(short, "dpo", "baseline", 0)
    assert paths.exp_avg("baseline", 0, "dpo").read_bytes() == first


def test_rlvr_stage_reports_reward_and_held_out_accuracy(tiny_workspace, monkeypatch):
    monkeypatch.chdir(tiny_workspace)
    rlvr = TRAIN | {
        "max_steps": 2,
        "batch_size": 8,
        "eval_steps": None,
        "num_generations": 4,
        "max_completion_length": 8,
        "test_size": 6,
        "eval_batch_size": 4,
    }
    _load_stage("rlvr").main(_params(rlvr=rlvr), "rlvr", "baseline", 0)
    summary = json.loads((paths.train_metrics("rlvr", "baseline", 0) / "metrics.json").read_text())
    assert summary["heldout/prompts"] == 6
    assert summary["heldout/gained"] + summary["heldout/lost"] <= 6
    assert 0.0 <= summary["heldout/mcnemar_p"] <= 1.0
    assert "reward" in summary and "kl" in summary
    # wall-clock figures stay out of the Git-tracked log, so reruns are byte-identical
    logs = paths.train_metrics("rlvr", "baseline", 0)
    assert "step_time" not in summary and not (logs / "plots/metrics/step_time.tsv").exists()
    assert load_model(paths.checkpoint("baseline", 0, "rlvr")).config.use_cache

    with pytest.raises(DataError, match="20 prompts, but rlvr.test_size is 20"):
        _load_stage("rlvr").main(_params(rlvr=rlvr | {"test_size": 20}), "rlvr", "baseline", 0)


def test_a_failed_run_leaves_no_log_and_no_checkpoint(tmp_path):
    runtime = _params().runtime
    out, logs = tmp_path / "models/x", tmp_path / "metrics/train/x/baseline-0"
    with pytest.raises(RuntimeError, match="boom"), TrainingRun(out, logs, runtime, 0) as run:
        run.live.log_metric("loss", 1.0)
        run.live.next_step()
        raise RuntimeError("boom")
    assert not out.exists() and not logs.exists()
    assert not list((tmp_path / "metrics/train/x").iterdir())  # no hidden log left either
