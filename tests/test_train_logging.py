"""The training log: dvclive rows at the trainer's global step, wall-clock noise filtered out, and
`final/eval_loss` equal to the loss of the final weights on the validation blocks."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerState

from deltalab.models import build_gpt2
from deltalab.schema.model import ModelParams
from deltalab.schema.runtime import RuntimeParams
from deltalab.train.logging import dvclive_callback, open_live
from deltalab.train.params import PretrainParams
from deltalab.train.pretrain import pretrain_trainer
from deltalab.train.recipe import TrainingRun

from .evaluation_fixtures import build_model, build_tokenizer, training_texts


def read_tsvs(live_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric history dvclive wrote: name -> [(step, value), ...]."""
    root = live_dir / "plots" / "metrics"
    out = {}
    for path in sorted(root.rglob("*.tsv")):
        with path.open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        name = path.relative_to(root).with_suffix("").as_posix()
        out[name] = [(int(r["step"]), float(r[path.stem])) for r in rows]
    return out


def test_rows_land_on_the_global_step_and_wall_clock_figures_are_dropped(tmp_path):
    live = open_live(tmp_path / "live")
    callback = dvclive_callback(live)
    train = {"loss": 2.5, "grad_norm": 0.75, "learning_rate": 0.001, "epoch": 0.25}
    evaluation = {
        "eval_loss": 2.25,
        "eval_runtime": 0.31,
        "eval_samples_per_second": 100.5,
        "eval_steps_per_second": 3.25,
        "epoch": 0.5,
    }
    end = {
        "train_runtime": 3.2,
        "train_samples_per_second": 50.0,
        "train_steps_per_second": 3.0,
        "total_flos": 1.0e9,
        "train_loss": 2.0,
        "epoch": 1.0,
    }
    calls = [
        (1, train),
        (5, {**train, "loss": 2.0, "step_time": 0.01}),
        (5, evaluation),
        (10, {**train, "loss": 1.5}),
        (10, {**evaluation, "eval_loss": 1.75}),
        (10, end),
    ]
    for step, logs in calls:
        callback.on_log(None, TrainerState(global_step=step), None, logs=dict(logs))
    live.make_summary()

    tsvs = read_tsvs(tmp_path / "live")
    # the stock callback would put these at its own counter: 0, 1, 2, 3, 4, 5
    assert tsvs["loss"] == [(1, 2.5), (5, 2.0), (10, 1.5)]
    assert tsvs["eval/loss"] == [(5, 2.25), (10, 1.75)]  # on the same steps as the train loss
    assert tsvs["grad_norm"] == [(1, 0.75), (5, 0.75), (10, 0.75)]
    assert tsvs["train/loss"] == [(10, 2.0)]
    assert tsvs["epoch"] == [(1, 0.25), (5, 0.25), (5, 0.5), (10, 0.25), (10, 0.5), (10, 1.0)]
    assert set(tsvs) == {"loss", "grad_norm", "learning_rate", "epoch", "eval/loss", "train/loss"}

    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["loss"] == 1.5 and summary["eval"] == {"loss": 1.75}
    assert summary["train"] == {"loss": 2.0}
    text = json.dumps(summary)
    for noisy in ("runtime", "per_second", "flos", "step_time"):
        assert noisy not in text


def _validation_loss(model, blocks: list[list[int]]) -> float:
    """Mean next-token cross-entropy over all validation tokens, in float64."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in blocks:
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            targets = torch.tensor(ids[1:])
            total -= logp[torch.arange(len(targets)), targets].sum().item()
            count += len(targets)
    return total / count


def _pretrain_run(tmp_path: Path, model, tokenizer, max_steps: int, eval_steps: int | None):
    """A few steps of the pretrain stage's trainer inside a TrainingRun, on 16-token blocks."""
    cfg = PretrainParams(
        max_steps=max_steps,
        batch_size=2,
        learning_rate=0.01,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        eval_steps=eval_steps,
        logging_steps=1,
        max_length=16,
    )
    texts = training_texts(40, seed=0)
    run = TrainingRun(tmp_path / "model", tmp_path / "metrics", RuntimeParams(device="cpu"), 0)
    trainer = pretrain_trainer(model, tokenizer, run, cfg, texts[:30], texts[30:])
    final = run.train(trainer)
    blocks = [list(ids) for ids in trainer.eval_dataset["input_ids"]]
    assert len(blocks) > cfg.batch_size  # several evaluation batches
    return run, trainer, final, blocks


@pytest.mark.parametrize(
    ("max_steps", "eval_steps"),
    # on the eval grid / off it (the Trainer adds an evaluation at the end) / no periodic
    # evaluation (final_eval_metrics runs the only one)
    [(2, 2), (3, 2), (3, None)],
)
def test_final_eval_loss_is_the_loss_of_the_final_weights(tmp_path, max_steps, eval_steps):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0)
    # GPT2LMHeadModel matches no transformers loss_type, so the Trainer divides by every label,
    # position 0 included (build_gpt2 and the loader name it); named, it divides by the predicted
    # tokens only.
    model.loss_type = "ForCausalLM"
    run, trainer, final, blocks = _pretrain_run(tmp_path, model, tokenizer, max_steps, eval_steps)
    with run:
        expected = _validation_loss(model, blocks)
        assert run.summary["final/eval_loss"] == pytest.approx(expected, rel=1e-5)
        assert final["eval_loss"] == run.summary["final/eval_loss"]
        evals = [(e["step"], e["eval_loss"]) for e in trainer.state.log_history if "eval_loss" in e]
        periodic = [] if eval_steps is None else [eval_steps]
        assert [step for step, _ in evals] == sorted({*periodic, max_steps})
        assert evals[-1][1] == pytest.approx(expected, rel=1e-5)
        if len(evals) > 1:  # the weights moved after the periodic evaluation: stale would fail
            assert not math.isclose(evals[0][1], expected, rel_tol=1e-3)
        run.save(model, tokenizer)
    # dvclive's rows sit on the trainer's steps, and the summary holds the final loss
    tsvs = read_tsvs(tmp_path / "metrics")
    assert [step for step, _ in tsvs["eval/loss"]] == [step for step, _ in evals]
    train_steps = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert [step for step, _ in tsvs["loss"]] == train_steps == list(range(1, max_steps + 1))
    summary = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert summary["final/eval_loss"] == pytest.approx(expected, rel=1e-5)


def test_pretrain_final_eval_loss_is_the_mean_next_token_loss(tmp_path):
    """The pretrain stage's own model (build_gpt2): eval_loss is 15/16 of the true loss here."""
    tokenizer = build_tokenizer()
    model = build_gpt2(ModelParams(n_layer=2, n_head=2, n_embd=64, n_positions=64), tokenizer, 0)
    run, _, _, blocks = _pretrain_run(tmp_path, model, tokenizer, 2, 2)
    with run:
        expected = _validation_loss(model, blocks)
        assert run.summary["final/eval_loss"] == pytest.approx(expected, rel=1e-5)
