"""Two sparse task vectors at 30% + merge + write: deltalab vs a DoTS-style path vs mergekit.

Generates Llama-shaped bf16 sharded checkpoints (a base, an SFT-like dense finetune and an RL-like
sparse one) under --workdir, then times, each in its own subprocess with its peak RSS (from
`os.wait4`):
- deltalab: `build_task_vectors` (both vectors in one pass over the base; exact top-k, packed
  masks) + `merge`, all streamed (= `deltalab task-vector --finetuned A --out a --finetuned B
  --out b` then `deltalab merge`);
- dots: the DoTS recipe: full state dicts in RAM, dense fp32 task vectors, sorted torch.topk
  threshold with `>=` per tensor, base + τ₁ + τ₂ as a full dict, saved as 5 GB shards;
- mergekit: `mergekit-yaml` breadcrumbs (density 0.3, gamma 0, weight 1, normalize false, fp32
  math, bf16 output) when a mergekit executable is found (--mergekit, default /tmp/mkvenv).

    nice -n 10 python bench/task_vectors.py                      # 0.25B and 1B
    nice -n 10 python bench/task_vectors.py --sizes 0.25B --keep

Targets: >= 3x faster than the DoTS-style path, not slower than mergekit, deltalab's peak RSS
<= 1.5 GB at every size (two sizes show it does not grow with the model). The DoTS path is skipped
at a size whose full state dicts would not fit in the available memory (it says so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

SHAPES = {
    # hidden, layers, intermediate, heads, kv heads, vocab, tied
    "tiny": (256, 2, 688, 4, 2, 8000, False),  # smoke test
    "0.25B": (1024, 16, 2816, 16, 4, 32000, False),
    "1B": (2048, 16, 8192, 32, 8, 128256, True),  # Llama-3.2-1B
    "3B": (3072, 28, 8192, 24, 8, 128256, True),  # Llama-3.2-3B
    "8B": (4096, 32, 14336, 32, 8, 128256, False),  # Llama-3.1-8B
}


def llama_plan(size: str) -> tuple[list[tuple[str, tuple[int, ...]]], dict]:
    """(tensor names and shapes in HF order, config.json) of a Llama-shaped model."""
    from transformers import LlamaConfig

    hidden, layers, inter, heads, kv, vocab, tied = SHAPES[size]
    kv_dim = hidden // heads * kv
    plan = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        plan += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    plan.append(("model.norm.weight", (hidden,)))
    if not tied:
        plan.append(("lm_head.weight", (vocab, hidden)))
    config = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=4096,
    ).to_dict()
    config |= {"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}
    config["dtype"] = "bfloat16"
    return plan, config


def generate(
    size: str, root: Path, names: tuple[str, ...] = ("base", "sft", "rl"), seed: int = 0
) -> dict[str, Path]:
    """Write base, sft (every entry moves ~1e-2 relative) and rl (20% of entries move ~3e-3)."""
    from deltalab.tensors.writer import CheckpointWriter

    plan, config = llama_plan(size)
    dirs = {name: root / name for name in ("base", *names)}
    writers = {}
    for name, d in dirs.items():
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(config, indent=2))
        writers[name] = CheckpointWriter(d, [(n, "BF16", s) for n, s in plan], 2 * 10**9)
    g = torch.Generator().manual_seed(seed)
    chunk = 1 << 24
    for name, shape in plan:
        n = math.prod(shape)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            if len(shape) == 1:
                w = 1.0 + torch.randn(m, generator=g) * 0.05
            else:
                w = torch.randn(m, generator=g) * 0.02
            base = w.bfloat16()
            writers["base"].write(name, base)
            if "sft" in writers:
                sft = w + torch.randn(m, generator=g) * (2e-4 if len(shape) > 1 else 5e-3)
                writers["sft"].write(name, sft.bfloat16())
            if "rl" in writers:
                rl = torch.randn(m, generator=g).mul_(6e-5 if len(shape) > 1 else 2e-3)
                rl.mul_(torch.rand(m, generator=g) < 0.2)
                writers["rl"].write(name, (w + rl).bfloat16())
    for w in writers.values():
        w.close()
    return dirs


# ---------------------------------------------------------------------------------------------
# The three implementations (run in child processes)


def run_deltalab(dirs: dict[str, Path], out: Path, ratio: float) -> None:
    from deltalab.merging.disk import merge
    from deltalab.merging.vectors import TaskVector, build_task_vectors
    from deltalab.tensors.reader import Checkpoint

    base = Checkpoint(dirs["base"])
    paths = [out.parent / f"{out.name}-{name}.safetensors" for name in ("sft", "rl")]
    targets = [(Checkpoint(dirs[name]), p) for name, p in zip(("sft", "rl"), paths, strict=True)]
    build_task_vectors(base, targets, ratio, progress=False)  # one pass over the base
    merge(base, [(TaskVector(p), 1.0) for p in paths], out, progress=False)


def run_dots(dirs: dict[str, Path], out: Path, ratio: float) -> None:
    """The DoTS recipe: full state dicts, dense fp32 vectors, sorted top-k, `>=` threshold."""
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import load_file

    def load(d: Path) -> dict[str, torch.Tensor]:
        sd: dict[str, torch.Tensor] = {}
        for f in sorted(d.glob("*.safetensors")):
            sd.update(load_file(f))
        return sd

    base = load(dirs["base"])
    vectors = []
    for name in ("sft", "rl"):
        ft = load(dirs[name])
        tau = {k: ft[k].float() - base[k].float() for k in base}
        del ft
        for t in tau.values():
            a = t.abs().flatten()
            kk = int(a.numel() * ratio)
            threshold = torch.topk(a, kk, sorted=True).values[-1]
            t.mul_((t.abs() >= threshold).to(t.dtype))
        vectors.append(tau)
    merged = {k: (w.float() + vectors[0][k] + vectors[1][k]).to(w.dtype) for k, w in base.items()}
    out.mkdir(parents=True)
    save_torch_state_dict(merged, out, max_shard_size="5GB")
    shutil.copy(dirs["base"] / "config.json", out / "config.json")


def run_mergekit(dirs: dict[str, Path], out: Path, ratio: float, exe: str) -> None:
    config = out.parent / f"{out.name}.yml"
    models = "".join(
        f"  - model: {dirs[n]}\n    parameters: {{weight: 1.0, density: {ratio}, gamma: 0.0}}\n"
        for n in ("sft", "rl")
    )
    config.write_text(
        f"merge_method: breadcrumbs\nbase_model: {dirs['base']}\nmodels:\n{models}"
        "parameters: {normalize: false}\ndtype: float32\nout_dtype: bfloat16\n"
    )
    cmd = [exe, str(config), str(out), "--no-cuda", "--no-copy-tokenizer", "--quiet"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(seconds, peak RSS of the child tree in GB, return code, stderr tail) of a subprocess."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    # ru_maxrss: KiB of the largest process; mergekit's own child (the CLI) is covered by
    # RUSAGE_CHILDREN inside the worker, which reports it on stderr
    peak = usage.ru_maxrss * 1024
    for line in err.splitlines():
        if line.startswith("CHILD_MAXRSS="):
            peak = max(peak, int(line.split("=")[1]) * 1024)
    return elapsed, peak / 1e9, os.waitstatus_to_exitcode(status), err.strip()[-500:]


def worker(method: str, root: Path, out: Path, ratio: float, mergekit: str) -> None:
    import resource

    dirs = {name: root / name for name in ("base", "sft", "rl")}
    if method == "deltalab":
        run_deltalab(dirs, out, ratio)
    elif method == "dots":
        run_dots(dirs, out, ratio)
    else:
        run_mergekit(dirs, out, ratio, mergekit)
        print(
            f"CHILD_MAXRSS={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}",
            file=sys.stderr,
        )


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.25B,1B", help=f"comma list of {list(SHAPES)}")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--workdir", default="/tmp/deltalab_bench_tv")
    parser.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-yaml")
    parser.add_argument("--methods", default="deltalab,dots,mergekit")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of every method")
    parser.add_argument("--keep", action="store_true", help="keep generated checkpoints")
    parser.add_argument("--repeats", type=int, default=1, help="best time of N runs")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, root, out = args.worker
        if args.threads:
            torch.set_num_threads(args.threads)
        worker(method, Path(root), Path(out), args.ratio, args.mergekit)
        return

    env = os.environ | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
    methods = args.methods.split(",")
    if "mergekit" in methods and not shutil.which(args.mergekit):
        print(f"# mergekit not found at {args.mergekit}: skipped")
        methods.remove("mergekit")
    print(
        f"# two task vectors at {args.ratio:g} + merge + write, Llama-shaped bf16, "
        f"threads {args.threads or 'default'}, torch {torch.__version__}; time = best of "
        f"{args.repeats} run(s) of a fresh process (imports included), peak RSS = max"
    )
    for size in args.sizes.split(","):
        root = Path(args.workdir) / size
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        generate(size, root)
        n = sum(math.prod(s) for _, s in llama_plan(size)[0])
        print(
            f"tv size={size} ({n / 1e9:.2f}B params, {n * 2 / 1e9:.1f} GB per checkpoint): "
            f"generated 3 checkpoints in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        results: dict[str, tuple[float, float]] = {}
        for method in methods:
            out = root / f"out-{method}"
            need = 15 * n + 2e9  # bf16 dicts + two fp32 vectors + merged dict + top-k scratch
            if method == "dots" and need > 0.9 * available_bytes():
                print(
                    f"tv size={size} {method:<9} skipped: needs ~{need / 1e9:.0f} GB of RAM, "
                    f"{available_bytes() / 1e9:.0f} GB available",
                    flush=True,
                )
                continue
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                method,
                str(root),
                str(out),
                "--ratio",
                str(args.ratio),
                "--threads",
                str(args.threads),
                "--mergekit",
                args.mergekit,
            ]
            runs = []
            for _ in range(args.repeats):
                os.sync()  # no write-back of earlier outputs during the measurement
                elapsed, peak, code, err = measure(cmd, env)
                shutil.rmtree(out, ignore_errors=True)
                for f in root.glob(f"out-{method}*"):
                    f.unlink() if f.is_file() else shutil.rmtree(f, ignore_errors=True)
                if code:
                    print(f"tv size={size} {method:<9} failed ({code}): {err}", flush=True)
                    break
                runs.append((elapsed, peak))
            if not runs:
                continue
            elapsed, peak = min(r[0] for r in runs), max(r[1] for r in runs)
            results[method] = (elapsed, peak)
            ours = results.get("deltalab")
            ratio = f"{elapsed / ours[0]:.1f}x deltalab's time" if ours else ""
            print(
                f"tv size={size} {method:<9} {elapsed:8.1f} s  peak RSS {peak:5.2f} GB  {ratio}",
                flush=True,
            )
        if "deltalab" in results:
            t, peak = results["deltalab"]
            parts = [
                f"peak RSS {peak:.2f} GB (target <= 1.5: {'met' if peak <= 1.5 else 'MISSED'})"
            ]
            if "dots" in results:
                r = results["dots"][0] / t
                parts.append(
                    f"{r:.1f}x faster than DoTS-style (target >= 3: "
                    f"{'met' if r >= 3 else 'MISSED'})"
                )
            if "mergekit" in results:
                r = results["mergekit"][0] / t
                parts.append(
                    f"{r:.2f}x mergekit's speed (target >= 1: {'met' if r >= 1 else 'MISSED'})"
                )
            print(f"tv size={size} summary: " + ", ".join(parts), flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
