"""One process vs two gloo ranks on the CPU for the same global batch: SFT (sft_gsm8k) and DPO.

Builds a small workspace (the pipeline's synthetic data, a random 2x64 GPT-2 parent with the
study's tokenizer), runs each stage with `runtime.processes` 1 and 2 (the stage re-runs itself
under torchrun), and prints the largest difference between the two logged loss curves, the
largest weight difference, and wall times.

    nice -n 10 python bench/distributed_training.py              # 20 steps of each
    python bench/distributed_training.py --steps 50
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from sampling import tiny_tokenizer  # noqa: E402

from deltalab import paths  # noqa: E402
from deltalab.models import build_gpt2, save_checkpoint  # noqa: E402
from deltalab.schema.model import ModelParams  # noqa: E402


def params(processes: int, steps: int) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    train = {"max_steps": steps, "batch_size": 8, "learning_rate": 1.0e-3, "warmup_ratio": 0.0,
             "logging_steps": 1, "eval_steps": steps, "gradient_accumulation_steps": 1,
             "max_length": 128, "val_fraction": 0.1}  # fmt: skip
    raw["model"] |= {"n_layer": 2, "n_head": 2, "n_embd": 64}
    raw["runtime"] |= {"device": "cpu", "torch_threads": 1, "processes": processes}
    sizes = {"gsm8k_train": 200, "gsm8k_test": 8, "prefs": 200, "rlvr": 8, "search": 4,
             "corpus_documents": 40, "tulu_train": 8, "tulu_val": 4}  # fmt: skip
    raw["data"]["sizes"] |= sizes
    raw["sft_gsm8k"] |= train | {"stop_eval_questions": 4, "stop_eval_max_new_tokens": 8}
    raw["dpo"] |= train | {"sft_loss_weight": 0.0}  # RPO's term is a per-rank token mean
    return raw


def run(root: Path, script: str, *args: str) -> float:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=root,
                          env=env, capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def loss_curve(root: Path, name: str) -> dict[int, float]:
    tsv = root / paths.train_metrics(name, "baseline", 0) / "plots/metrics/train/loss.tsv"
    with tsv.open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f, delimiter="\t")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    member = ("--cond", "baseline", "--seed", "0")
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        one.mkdir()
        (one / "params.yaml").write_text(yaml.safe_dump(params(1, args.steps)))
        run(one, "prepare_data.py")
        tokenizer = tiny_tokenizer()
        model = build_gpt2(ModelParams(n_layer=2, n_head=2, n_embd=64), tokenizer, seed=0)
        save_checkpoint(model, tokenizer, one / paths.checkpoint("baseline", 0, "sft_tulu"))
        shutil.copytree(one, two)
        (two / "params.yaml").write_text(yaml.safe_dump(params(2, args.steps)))
        for script, name in (("sft_gsm8k.py", "sft_gsm8k"), ("dpo.py", "dpo")):
            times = [run(w, script, "--checkpoint", name, *member) for w in (one, two)]
            a, b = loss_curve(one, name), loss_curve(two, name)
            curve = max(abs(a[s] - b[s]) for s in a)
            wa = load_file(one / paths.checkpoint("baseline", 0, name) / "model.safetensors")
            wb = load_file(two / paths.checkpoint("baseline", 0, name) / "model.safetensors")
            weights = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
            parent = "sft_tulu" if name == "sft_gsm8k" else "sft_gsm8k"
            wp = load_file(one / paths.checkpoint("baseline", 0, parent) / "model.safetensors")
            moved = max(float((wa[k] - wp[k]).abs().max()) for k in wa)
            print(f"{name}: {args.steps} steps, global batch 8: 1 process {times[0]:.1f} s, "
                  f"2 ranks {times[1]:.1f} s; loss curves differ by at most {curve:.2e} "
                  f"(of {max(a.values()):.3f}); weights by {weights:.2e} (moved {moved:.2e})",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
