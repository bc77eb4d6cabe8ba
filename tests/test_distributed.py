"""Training stages under a launcher: `runtime.processes: 2` makes the stage command re-run itself
under torchrun, two gloo ranks on the CPU. The batch sizes are global, so two ranks train the
model one process trains (up to the order of float sums); only rank 0 writes the checkpoint and
the dvclive log; masked DPO keeps every frozen entry bitwise unchanged on every rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from deltalab import paths
from deltalab.models import build_gpt2, save_checkpoint
from tests.helpers import tiny_tokenizer
from tests.tiny import ROOT, tiny_raw

pytestmark = pytest.mark.slow

TRAIN = {"max_steps": 3, "batch_size": 4, "learning_rate": 1.0e-3, "warmup_ratio": 0.0,
         "logging_steps": 1, "eval_steps": 3, "gradient_accumulation_steps": 1}  # fmt: skip
MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32}


def _params(processes: int) -> dict:
    return tiny_raw(
        {
            "model": MODEL,
            "runtime": {"device": "cpu", "torch_threads": 1, "processes": processes},
            "data": {
                "sizes": {
                    "gsm8k_train": 40,
                    "gsm8k_test": 8,
                    "prefs": 24,
                    "rlvr": 24,
                    "corpus_documents": 40,
                    "tulu_train": 8,
                    "tulu_val": 4,
                    "search": 4,
                }
            },
            "sft_gsm8k": TRAIN
            | {
                "max_length": 128,
                "val_fraction": 0.1,
                "stop_eval_questions": 4,
                "stop_eval_max_new_tokens": 8,
                "stop_eval_batch_size": 4,
            },
            # the RPO term (sft_loss_weight) is TRL's per-rank token mean, not the global one
            "dpo": TRAIN | {"max_length": 128, "val_fraction": 0.2, "sft_loss_weight": 0.0},
            "masked_dpo": TRAIN | {"max_length": 128, "val_fraction": 0.2},
            "masks": {"fisher_samples": 4},
            "rlvr": TRAIN
            | {
                "num_generations": 2,
                "max_completion_length": 8,
                "test_size": 4,
                "eval_batch_size": 4,
                "eval_steps": None,
            },
        }
    )


def _run(root: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


MEMBER = ("--cond", "baseline", "--seed", "0")


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """Two identical directories laid out like the pipeline's (data, sft_tulu and sft_gsm8k
    parents), one trained by one process, one by two."""
    root = tmp_path_factory.mktemp("dist")
    one = root / "one"
    one.mkdir()
    (one / "params.yaml").write_text(yaml.safe_dump(_params(1)))
    _run(one, "prepare_data.py")
    tokenizer = tiny_tokenizer()
    for k, name in enumerate(("sft_tulu", "sft_gsm8k")):
        model = build_gpt2(_model_params(), tokenizer, seed=k)
        save_checkpoint(model, tokenizer, one / paths.checkpoint("baseline", 0, name))
    two = root / "two"
    shutil.copytree(one, two)
    (two / "params.yaml").write_text(yaml.safe_dump(_params(2)))
    return one, two


def _model_params():
    from deltalab.config import parse_params

    return parse_params(tiny_raw({"model": MODEL})).model


def _weights(root: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(root / paths.checkpoint("baseline", 0, name) / "model.safetensors")


def _summary(root: Path, name: str) -> dict:
    return json.loads((root / paths.train_summary(name, "baseline", 0)).read_text())


def _same_model(one: Path, two: Path, name: str) -> None:
    a, b = _weights(one, name), _weights(two, name)
    parent = _weights(one, "sft_gsm8k" if name != "sft_gsm8k" else "sft_tulu")
    assert set(a) == set(b)
    moved = sum(not torch.equal(a[k], parent[k]) for k in a if k in parent)
    assert moved, f"{name} did not train"
    for k in a:
        # Adam turns last-bit gradient differences into ~1e-6 steps; the model moved ~1e-3
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
    la, lb = _summary(one, name), _summary(two, name)
    assert lb["final/train_loss"] == pytest.approx(la["final/train_loss"], rel=1e-4)


def _written_once(root: Path, name: str) -> None:
    """One checkpoint and one training log, no stray per-rank files beside them."""
    member = root / paths.checkpoint("baseline", 0, name)
    assert (member / "model.safetensors").is_file()
    logs = root / paths.train_metrics(name, "baseline", 0)
    assert (logs / "metrics.json").is_file()
    assert not [p for p in member.parent.iterdir() if p.name.startswith(".")]
    assert not [p for p in logs.parent.iterdir() if "tmp" in p.name]


def test_two_ranks_train_the_one_process_model_sft_and_dpo(workspaces):
    one, two = workspaces
    # sft_gsm8k retrains the DPO parent in both, from the same sft_tulu
    for script, name in (("sft_gsm8k.py", "sft_gsm8k"), ("dpo.py", "dpo")):
        _run(one, script, "--checkpoint", name, *MEMBER)
        _run(two, script, "--checkpoint", name, *MEMBER)
        _written_once(two, name)
        _same_model(one, two, name)
    # the momentum file of DPO is written once, by rank 0, and equals one process's
    a = load_file(one / paths.exp_avg("baseline", 0, "dpo"))
    b = load_file(two / paths.exp_avg("baseline", 0, "dpo"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-8)


def test_two_ranks_masked_dpo_keeps_frozen_entries_on_every_rank(workspaces):
    _one, two = workspaces
    if not (two / paths.exp_avg("baseline", 0, "dpo")).is_file():
        pytest.skip("needs the DPO run of the test above")
    _run(two, "masks.py", *MEMBER)
    out = _run(two, "masked_dpo.py", *MEMBER)
    metrics = json.loads((two / paths.dots_metrics("masked_dpo", "baseline", 0)).read_text())
    for name in ("masked_dpo", "masked_dpo_random"):
        assert metrics[name]["frozen_changed"] == 0 and metrics[name]["trainable"] > 0
        _written_once(two, name)
    # each rank checked its own copy of the weights (a changed entry fails the stage there)
    assert out.returncode == 0


def test_two_ranks_grpo_writes_once(workspaces):
    _, two = workspaces
    out = _run(two, "rlvr.py", "--checkpoint", "rlvr", *MEMBER)
    _written_once(two, "rlvr")
    assert out.stdout.count("held-out greedy") == 1  # rank 0 alone reports
    summary = _summary(two, "rlvr")
    assert "reward/last_fifth" in summary
