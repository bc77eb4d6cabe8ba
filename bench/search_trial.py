"""One merge-search trial: deltalab's in-memory trial vs a DoTS-style trial, and weight drift.

A trial scores one (scale_sft, scale_rlvr): set the weights, sample `votes` answers per query,
score the prompt perplexity. Both methods run the same generation and perplexity code; they
differ in how the weights get there:
- deltalab: `LiveMerge.apply` rebuilds the touched weights in place from an fp32 master copy and
  the sparse vectors (no file written);
- DoTS-style: dense fp32 task vectors held in RAM, the merged state dict built in full, written as
  a safetensors checkpoint and loaded back into a fresh model (DoTS restarts vLLM on it).

Drift: 100 trials of DoTS's add-then-subtract on the model's own dtype (bf16 and fp16), against
100 `LiveMerge.apply` calls followed by scales (0, 0): the share of weights that no longer equal
the original.

Sizes: `tiny` = the pipeline's own sft_tulu + vectors of the first delta-track member (run
`dvc repro task_vectors` first); `0.5B` = a generated Qwen2.5-0.5B-shaped Llama (bf16, random
weights, an SFT-like dense and an RL-like sparse finetune) with the pipeline's tokenizer.
Each method runs in its own process (peak RSS from `os.wait4`).

    nice -n 10 python bench/search_trial.py                      # tiny and 0.5B
    python bench/search_trial.py --sizes tiny --trials 5

Targets: merge-apply <= 10% of our trial at both sizes; >= 5x faster per trial than DoTS-style;
drift 0 for ours.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from measure import run_measured  # noqa: E402
from task_vectors import SHAPES, generate  # noqa: E402

SHAPES.setdefault("0.5B", (896, 24, 4864, 14, 2, 151936, True))  # Qwen2.5-0.5B's shape
TRIAL = {  # queries, votes, new tokens per trial
    "tiny": (16, 7, 64),  # the tiny profile's search
    "0.5B": (4, 2, 16),  # cut down so a CPU trial takes seconds, not minutes
}


def setup(size: str, workdir: Path) -> tuple[Path, list[Path], list[str]]:
    """(base checkpoint, [sft vector, rlvr vector], query questions)."""
    from deltalab import paths
    from deltalab.config import load_params
    from deltalab.merging.vectors import build_task_vectors
    from deltalab.tensors.reader import Checkpoint

    pool = [json.loads(line)["question"] for line in paths.SEARCH_POOL.open()]
    n_queries = TRIAL[size][0]
    if size == "tiny":
        params = load_params(ROOT / "params.yaml")
        cond, seed = params.delta_track.conditions[0], params.delta_track.seeds[0]
        vectors = [paths.vectors(cond, seed) / f"{v}.safetensors" for v in ("sft", "rlvr")]
        return paths.checkpoint(cond, seed, "sft_tulu"), vectors, pool[:n_queries]
    root = workdir / size
    if not (root / "vectors" / "rlvr.safetensors").is_file():
        shutil.rmtree(root, ignore_errors=True)
        dirs = generate(size, root)
        for f in paths.TOKENIZER.iterdir():
            shutil.copy(f, dirs["base"] / f.name)
        (root / "vectors").mkdir()
        targets = [(Checkpoint(dirs[n]), root / "vectors" / f"{v}.safetensors")
                   for n, v in (("sft", "sft"), ("rl", "rlvr"))]  # fmt: skip
        build_task_vectors(Checkpoint(dirs["base"]), targets, 0.3, progress=False)
    vectors = [root / "vectors" / f"{v}.safetensors" for v in ("sft", "rlvr")]
    return root / "base", vectors, pool[:n_queries]


def _cfg(size: str):
    from deltalab.search.params import SearchParams

    _, votes, tokens = TRIAL[size]
    return SearchParams(votes=votes, max_new_tokens=tokens, batch_size=256)


def _scales(trials: int) -> list[list[float]]:
    rng = random.Random(0)
    return [[rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0)] for _ in range(trials)]


def _score(model, tokenizer, questions, cfg) -> dict[str, float]:
    from deltalab.evaluation.engine import HFEngine
    from deltalab.search.objectives import prompt_perplexity
    from deltalab.search.voting import vote

    t0 = time.perf_counter()
    vote(HFEngine(model, tokenizer), questions, cfg)
    t1 = time.perf_counter()
    prompt_perplexity(model, tokenizer, questions, cfg.ppl_batch_size)
    return {"generate": t1 - t0, "perplexity": time.perf_counter() - t1}


def run_ours(size: str, workdir: Path, trials: int) -> dict:
    from deltalab.search.live_model import open_live_model
    from deltalab.search.objectives import SearchObjective

    base, vectors, questions = setup(size, workdir)
    dtype = "float32" if size == "tiny" else "bfloat16"
    lm = open_live_model(base, vectors, dtype=dtype)
    original = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}  # the base
    objective = SearchObjective(lm.engine, lm.apply, questions, _cfg(size))
    objective([1.0, 1.0])  # warm-up
    parts: dict[str, float] = {}
    for scales in _scales(trials):
        for k, v in objective(scales).seconds.items():
            parts[k] = parts.get(k, 0.0) + v / trials
    # drift: 100 more applies, then (0, 0) must give the base as loaded, bit for bit
    for scales in _scales(100):
        lm.live.apply(scales)
    lm.live.apply([0.0, 0.0])
    now = lm.model.state_dict()
    changed = sum(int((now[k] != v).sum()) for k, v in original.items())
    total = sum(v.numel() for v in original.values())
    return {"parts": parts, "drift": changed / total, "held_gb": lm.live.nbytes / 1e9}


def run_dots(size: str, workdir: Path, trials: int) -> dict:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deltalab.merging.vectors import TaskVector

    base, vectors, questions = setup(size, workdir)
    dtype = torch.float32 if size == "tiny" else torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(base)
    state = {}
    for f in sorted(Path(base).glob("*.safetensors")):
        state.update(load_file(f))
    dense = [{k: tv.dense(k) for k in tv.entries} for tv in map(TaskVector, vectors)]
    config_dir = Path(base)
    cfg = _cfg(size)
    parts: dict[str, float] = {}
    writer = AutoModelForCausalLM.from_pretrained(config_dir, dtype=dtype)  # DoTS's in-RAM model
    for i, scales in enumerate([[1.0, 1.0], *_scales(trials)]):  # the first is a warm-up
        t0 = time.perf_counter()
        merged = {
            k: (w.float() + scales[0] * dense[0][k] + scales[1] * dense[1][k]).to(w.dtype)
            if k in dense[0] else w
            for k, w in state.items()
        }  # fmt: skip
        writer.load_state_dict(merged, strict=False)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            writer.save_pretrained(tmp)  # DoTS writes the merged model for vLLM
            t2 = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).eval()  # "restart"
            t3 = time.perf_counter()
            scored = _score(model, tokenizer, questions, cfg)
        if i:
            step = {"merge": t1 - t0, "write": t2 - t1, "reload": t3 - t2} | scored
            for k, v in step.items():
                parts[k] = parts.get(k, 0.0) + v / trials
    # DoTS's drift: add then subtract on the model dtype, 100 times
    drift = {}
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        keys = [k for k in dense[0] if state[k].is_floating_point()]
        if size != "tiny":  # 100 trials over 0.5B elements: two layers are representative
            keys = [k for k in keys if ".layers.0." in k or ".layers.1." in k]
        changed = total = 0
        for k in keys:
            w0 = state[k].to(dt)
            w = w0.clone()
            for a, b in _scales(100):
                d = (a * dense[0][k] + b * dense[1][k]).to(dt)
                w += d
                w -= d
            changed += int((w != w0).sum())
            total += w.numel()
        drift[name] = changed / total
    return {"parts": parts, "drift": drift}


def measure(args: list[str]) -> tuple[dict, float, float]:
    """(the worker's JSON result, wall seconds, peak RSS in GB)."""
    seconds, peak, out = run_measured(args)
    return json.loads(out.strip().splitlines()[-1]), seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,0.5B")
    parser.add_argument("--trials", type=int, default=5, help="timed trials per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/deltalab_bench_search")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if args.worker:
        method, size = args.worker
        run = run_ours if method == "ours" else run_dots
        print(json.dumps(run(size, workdir, args.trials)))
        return
    print(
        f"# one search trial, {args.trials} timed after a warm-up; torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    for size in args.sizes.split(","):
        setup(size, workdir)  # generate outside the timings
        q, v, t = TRIAL[size]
        results = {}
        for method in ("ours", "dots"):
            cmd = [sys.executable, __file__, "--worker", method, size]
            cmd += ["--trials", str(args.trials), "--threads", str(args.threads)]
            cmd += ["--workdir", str(workdir)]
            results[method], _, peak = measure(cmd)
            parts = results[method]["parts"]
            total = sum(parts.values())
            shown = "  ".join(f"{k} {s:.3f}s" for k, s in parts.items())
            print(
                f"trial size={size} ({q} queries x {v} votes x {t} tokens) {method:<4} "
                f"{total:7.3f} s/trial  [{shown}]  peak RSS {peak:.2f} GB",
                flush=True,
            )
        ours = results["ours"]["parts"]
        dots = results["dots"]["parts"]
        share = ours["apply"] / sum(ours.values())
        speed = sum(dots.values()) / sum(ours.values())
        weights = dots["merge"] + dots["write"] + dots["reload"]
        print(
            f"trial size={size} summary: merge-apply {share:.1%} of our trial (target <= 10%: "
            f"{'met' if share <= 0.10 else 'MISSED'}); {speed:.2f}x faster per trial than "
            f"DoTS-style (target >= 5: {'met' if speed >= 5 else 'MISSED'}); setting the "
            f"weights: {ours['apply']:.3f} s vs {weights:.3f} s ({weights / ours['apply']:.0f}x)",
            flush=True,
        )
        d = results["dots"]["drift"]
        print(
            f"drift size={size} after 100 trials: DoTS add-then-subtract bf16 {d['bf16']:.2%}, "
            f"fp16 {d['fp16']:.2%} of weights changed; ours {results['ours']['drift']:.2%} "
            f"(target 0: {'met' if results['ours']['drift'] == 0 else 'MISSED'})",
            flush=True,
        )


if __name__ == "__main__":
    main()
