"""Live-trial apply time per merge method: how long `LiveMerge.apply` takes to set a loaded
model's weights for one search trial, for every method against task arithmetic.

Same setup as `bench/search_trial.py` (the 0.5B size: a generated Qwen2.5-0.5B-shaped bf16 base
with an SFT-like dense and an RL-like sparse fine-tune, vectors at top 30%). Each method runs in its
own process (peak RSS from `os.wait4`): load the base, attach the vectors with the method, one
warm-up apply, then `--trials` timed applies at random scales (the prepared vectors reused), and
for methods that read `density`, `--trials` applies with a new density each (a search over it:
prepared again every trial). Task arithmetic rebuilds touched
weights from the sparse vectors in cache-sized blocks; the other methods rebuild each touched
tensor whole from its dense vectors with the checkpoint writer's function (their trims, elections
and drops need the whole tensor), so they hold the dense vectors too.

    nice -n 10 python bench/live_apply.py                   # 0.5B, every method
    python bench/live_apply.py --size tiny --methods task_arithmetic,ties
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from search_trial import _scales, measure, setup  # noqa: E402

from deltalab.merging.method_spec import METHOD_NAMES, READS, MethodParams  # noqa: E402

# what a search over each method would run with (on vectors already at top 30%)
PARAMS = {
    "task_arithmetic": MethodParams(),
    "ties": MethodParams(density=0.5),
    "dare_linear": MethodParams(density=0.5),
    "dare_ties": MethodParams(density=0.5, normalize=False),
    "della_linear": MethodParams(density=0.5, epsilon=0.1),
    "della": MethodParams(density=0.5, epsilon=0.1),
    "breadcrumbs": MethodParams(density=0.5, gamma=0.01),
    "breadcrumbs_ties": MethodParams(density=0.5, gamma=0.01, normalize=False),
    "ram": MethodParams(epsilon=1e-5),
}


def run(size: str, method: str, workdir: Path, trials: int) -> dict:
    from deltalab.search.live_model import open_live_model

    base, vectors, _ = setup(size, workdir)
    dtype = "float32" if size == "tiny" else "bfloat16"
    t0 = time.perf_counter()
    lm = open_live_model(base, vectors, dtype=dtype, method=method, method_params=PARAMS[method])
    attach = time.perf_counter() - t0
    lm.apply([1.0, 1.0])  # warm-up
    seconds = []
    for scales in _scales(trials):
        t0 = time.perf_counter()
        lm.apply(scales)
        seconds.append(time.perf_counter() - t0)
    searched = []  # a search over density: new parameters every trial, prepared again
    if "density" in READS[method]:
        for i, scales in enumerate(_scales(trials)):
            t0 = time.perf_counter()
            lm.apply(scales, {"density": 0.2 + 0.6 * i / max(trials - 1, 1)})
            searched.append(time.perf_counter() - t0)
    touched = sum(s.base.numel() for s in lm.live.slots.values())
    return {
        "apply": sum(seconds) / trials,
        "searched": sum(searched) / trials if searched else None,
        "attach": attach,
        "held_gb": lm.live.nbytes / 1e9,
        "touched": touched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.5B")
    parser.add_argument("--methods", default=",".join(METHOD_NAMES))
    parser.add_argument("--trials", type=int, default=5, help="timed applies per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/deltalab_bench_search")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(run(args.size, args.worker, workdir, args.trials)))
        return
    setup(args.size, workdir)  # generate outside the timings
    print(f"# live apply per method, size={args.size}, {args.trials} timed applies after a "
          f"warm-up; torch {torch.__version__}, {args.threads} threads")  # fmt: skip
    reference = None
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--worker", method, "--size", args.size,
               "--trials", str(args.trials), "--threads", str(args.threads),
               "--workdir", str(workdir)]  # fmt: skip
        result, _, peak = measure(cmd)
        reference = reference or (result["apply"] if method == "task_arithmetic" else None)
        ratio = f"{result['apply'] / reference:6.2f}x task_arithmetic" if reference else ""
        searched = result["searched"]
        density = f"{searched:7.3f} s/trial" if searched is not None else "      -"
        print(
            f"apply size={args.size} method={method:<16} {result['apply']:7.3f} s/trial {ratio}"
            f"  searching density: {density}  attach {result['attach']:6.1f} s  held "
            f"{result['held_gb']:.2f} GB  peak RSS {peak:.2f} GB  "
            f"({result['touched'] / 1e6:.0f}M weights rebuilt)",
            flush=True,
        )


if __name__ == "__main__":
    main()
