"""Training throughput of the SFT stages: the old settings and the new, in one run (target >= 1.5x).

- old: TRL's `SFTTrainer` as it comes (its fused, chunked LM head, which also computes entropy and
  token accuracy at every step) on GPT-2's default activation `gelu_new`, with `adamw_torch`;
- new: deltalab's `sft_trainer` (`TokenMeanSFTTrainer`: the LM head and cross-entropy at label
  positions only) on `gelu_pytorch_tanh` (`build_gpt2`), the same function as one fused kernel,
  with `adamw_torch_fused` (one kernel for all parameters instead of a Python loop over them).

Both start from the same weights and see the same batches (same seed, same data order), so the
bench also prints the largest difference between their logged training losses: it must be float
noise, or the new settings would change what is learned. Tokens/s counts non-pad tokens. Each
variant runs in its own process, so each peak RSS is its own.

    python bench/train_throughput.py              # tiny profile, both SFT stages, 100 steps x 3
    python bench/train_throughput.py --steps 200 --threads 1 --repeats 1

Needs the tiny profile's data and tokenizer (`dvc repro build_tokenizer` or `dvc pull`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("sft_tulu", "sft_gsm8k")


def run_variant(stage: str, variant: str, steps: int, threads: int | None) -> dict:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel
    from trl import SFTTrainer

    from deltalab import paths
    from deltalab.config import load_params
    from deltalab.data import read_jsonl
    from deltalab.models import build_gpt2
    from deltalab.train import sft
    from deltalab.train.recipe import TrainingRun

    params = load_params("params.yaml")
    runtime = params.runtime.model_copy(
        update={"torch_threads": threads or params.runtime.torch_threads}
    )
    cfg = getattr(params, stage).model_copy(
        update={"max_steps": steps, "eval_steps": None, "logging_steps": 10}
    )
    if stage == "sft_tulu":
        rows = read_jsonl(paths.DATA / "tulu/train.jsonl", ["messages"])
    else:
        rows = sft.gsm8k_to_messages(read_jsonl(paths.DATA / "gsm8k/train.jsonl"))
    tokenizer = AutoTokenizer.from_pretrained(paths.TOKENIZER)
    model = build_gpt2(params.model, tokenizer, seed=0)
    if variant == "old":
        config = model.config
        config.activation_function = "gelu_new"
        old = GPT2LMHeadModel(config)
        old.load_state_dict(model.state_dict())
        model = old
        sft.TokenMeanSFTTrainer = SFTTrainer  # sft_trainer builds TRL's own
    with TrainingRun(
        Path("/tmp/train-throughput/out"), Path("/tmp/train-throughput/logs"), runtime, 0
    ) as run:
        trainer = sft.sft_trainer(model, tokenizer, run, cfg, rows, rows[:16])
        collate, tokens = trainer.data_collator, [0]

        def counting(batch):
            out = collate(batch)
            mask = out.get("attention_mask")
            tokens[0] += int(mask.sum()) if mask is not None else int(out["input_ids"].numel())
            return out

        trainer.data_collator = counting
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "seconds": seconds,
        "tokens": tokens[0],
        "losses": losses,
        "threads": torch.get_num_threads(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="default: runtime.torch_threads")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant (median)")
    parser.add_argument("--variant", choices=("old", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child process: one measurement, as JSON on the last line
        print(json.dumps(run_variant(args.stage, args.variant, args.steps, args.threads)))
        return
    for stage in args.stages:
        runs: dict[str, list[dict]] = {"old": [], "new": []}
        for repeat in range(args.repeats):
            # alternate the order, so a slow spell of the machine hits both variants
            for variant in ("old", "new") if repeat % 2 == 0 else ("new", "old"):
                cmd = [sys.executable, __file__, "--variant", variant, "--stage", stage]
                cmd += ["--steps", str(args.steps)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[variant].append(json.loads(out.strip().splitlines()[-1]))
        rate = {
            v: statistics.median(r["tokens"] / r["seconds"] for r in rs) for v, rs in runs.items()
        }
        for variant, rs in runs.items():
            first = rs[0]  # every run of a variant sees the same tokens and threads
            spread = [run["tokens"] / run["seconds"] for run in rs]
            print(
                f"{stage} {variant}: {rate[variant]:8.0f} tokens/s (median of {len(rs)}: "
                f"{min(spread):.0f}-{max(spread):.0f})  "
                f"{first['tokens'] / rate[variant] / args.steps * 1000:6.1f} ms/step  "
                f"({args.steps} steps, {first['threads']} threads)  "
                f"peak RSS {max(x['peak_rss_gb'] for x in rs):.2f} GB",
                flush=True,
            )
        old, new = runs["old"][0], runs["new"][0]
        assert old["tokens"] == new["tokens"], "the two variants saw different batches"
        drift = max(abs(a - b) for a, b in zip(old["losses"], new["losses"], strict=True))
        speedup = rate["new"] / rate["old"]
        print(
            f"{stage} summary: new/old {speedup:.2f}x tokens/s (target >= 1.5: "
            f"{'met' if speedup >= 1.5 else 'MISSED'}); same {old['tokens']} tokens; largest "
            f"logged-loss difference {drift:.1e} over {len(old['losses'])} logs",
            flush=True,
        )


if __name__ == "__main__":
    main()
