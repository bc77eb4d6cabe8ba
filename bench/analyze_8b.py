"""`deltalab analyze` on a generated Llama-3.1-8B-shaped bf16 pair: peak RSS (target <= 4 GB).

Writes a base and an RL-like finetune (20% of entries moved, the rest bit-identical) as 2 GB
bf16 shards under --workdir (2 × 16 GB for 8B), runs the CLI in a subprocess and reports its wall
time and peak RSS (`os.wait4`). Smaller sizes in --sizes show how the peak scales (it should not:
memory is bounded by the chunk size, not by the model).

    nice -n 10 python bench/analyze_8b.py                          # 8B (needs ~33 GB of disk)
    nice -n 10 python bench/analyze_8b.py --sizes 1B,8B            # the same analysis at 1B too
    nice -n 10 python bench/analyze_8b.py --sizes 1B --extrapolate # disk too small for 8B
    nice -n 10 python bench/analyze_8b.py --imported               # through import manifests

With --imported, both checkpoints are first imported as the pipeline imports them (a manifest of
their files; the analysis resolves each manifest and verifies every file's sha256 before it
reads), so the peak includes what the Tulu 3 profile's analyze_deltas does on top of the math.

With --extrapolate (for machines without the disk for 8B), the 8B peak is estimated from the
measured sizes: tensors above the chunk size are streamed in chunks, so once the largest tensor
exceeds the chunk the peak no longer grows; the estimate scales the worst measured peak by the
ratio of chunk-bounded largest tensors (1 when the measured model already had one above it).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from task_vectors import SHAPES, generate, llama_plan


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read() if proc.stderr else ""
    return time.perf_counter() - start, usage.ru_maxrss * 1024 / 1e9, status, err[-800:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8B", help=f"comma list of {list(SHAPES)}")
    parser.add_argument("--workdir", default="/tmp/deltalab_bench_an")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads (0: default)")
    parser.add_argument("--extrapolate", action="store_true", help="estimate 8B from the sizes run")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--imported", action="store_true", help="analyze through manifests")
    parser.add_argument("analyze_args", nargs="*", help="extra `deltalab analyze` flags after --")
    args = parser.parse_args()
    env = os.environ | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
    print(f"# deltalab analyze on generated Llama-shaped bf16 pairs, threads {args.threads}")
    measured = []
    for size in args.sizes.split(","):
        root = Path(args.workdir) / size
        shutil.rmtree(root, ignore_errors=True)
        plan, _ = llama_plan(size)
        n = sum(math.prod(s) for _, s in plan)
        largest = max(math.prod(s) for _, s in plan)
        start = time.perf_counter()
        dirs = generate(size, root, names=("rl",))
        print(
            f"analyze size={size} ({n / 1e9:.2f}B params, {2 * n / 1e9:.1f} GB per checkpoint, "
            f"largest tensor {largest / 1e6:.0f}M): generated the pair in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        if args.imported:
            from tokenizers import Tokenizer, models

            from deltalab.tensors.imports import import_checkpoint

            start = time.perf_counter()
            for name in ("base", "rl"):  # an import needs a tokenizer; the analysis reads none
                Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")).save(
                    str(dirs[name] / "tokenizer.json")
                )
                (root / f"{name}-import").mkdir()
                import_checkpoint(str(dirs[name]), None, root / f"{name}-import")
                dirs[name] = root / f"{name}-import"
            print(f"imported both in {time.perf_counter() - start:.0f} s", flush=True)
        cmd = [
            sys.executable,
            "-m",
            "deltalab.cli",
            "analyze",
            "--base",
            str(dirs["base"]),
            "--finetuned",
            str(dirs["rl"]),
            "--out",
            str(root / "report"),
            "--quiet",
            *args.analyze_args,
        ]
        elapsed, peak, status, err = run(cmd, env)
        if status:
            print(f"analyze size={size} failed: {err}", flush=True)
        else:
            verdict = "met" if peak <= 4 else "MISSED"
            how = " (imported: manifests verified)" if args.imported else ""
            print(
                f"analyze size={size}{how} {elapsed:8.1f} s  peak RSS {peak:5.2f} GB "
                f"(target <= 4 GB: {verdict})",
                flush=True,
            )
            measured.append((n, largest, peak))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.extrapolate and measured:
        plan8, _ = llama_plan("8B")
        largest8 = max(math.prod(s) for _, s in plan8)
        chunk = 2**25
        worst = max(p for _, _, p in measured)
        est = worst * max(1.0, min(largest8, chunk) / min(max(m[1] for m in measured), chunk))
        print(
            f"analyze size=8B extrapolated peak RSS {est:.2f} GB from {len(measured)} measured "
            f"size(s) (memory is bounded by the {chunk / 1e6:.0f}M-element chunk; 8B's largest "
            f"tensor {largest8 / 1e6:.0f}M is streamed)",
            flush=True,
        )


if __name__ == "__main__":
    main()
