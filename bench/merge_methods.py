"""Our merge methods against mergekit's, side by side on a generated Llama-shaped bf16 base and two
fine-tunes (an SFT-like dense one and an RL-like sparse one, `bench/task_vectors.py`). Ours merges
from task vectors built once (as the pipeline's task_vectors stage does); each line gives our
merge alone and with that build added, against mergekit, which forms the deltas itself.

Deterministic methods (task_arithmetic, ties, breadcrumbs, breadcrumbs_ties, ram) at two densities
and two scale pairs: the worst absolute difference of the outputs and the share of entries that
differ by more than one bf16 step. DARE and DELLA draw random masks (ours seeded and the same on
every device, mergekit's from torch's device RNG), so they are compared by statistics over all
tensors: the share of delta entries kept and the mean rescale of a kept entry. Wall time and peak
RSS of each run (ours: building the dense task vectors once, then the merge; mergekit: its own
merge, which forms the deltas itself).

mergekit runs in its own virtual environment (its pinned dependencies are not ours):

    python -m venv /tmp/mk && /tmp/mk/bin/pip install torch==2.13.0 --find-links /opt/wheels
    /tmp/mk/bin/pip install mergekit
    nice -n 10 python bench/merge_methods.py --mergekit /tmp/mk/bin/mergekit-yaml          # 0.25B
    python bench/merge_methods.py --mergekit /tmp/mk/bin/mergekit-yaml --size tiny          # quick

Targets (0.25B): every deterministic method within float reordering of mergekit's (differences
explained where systematic); ours >= 3x faster and <= 1 GB of RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from measure import run_measured  # noqa: E402
from task_vectors import generate  # noqa: E402

DETERMINISTIC = ["task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties", "ram"]
RANDOM = ["dare_linear", "dare_ties", "della_linear", "della"]
# mergekit's defaults for dividing by the agreeing weights, which ours follow
NORMALIZE = {"ties": True, "della": True}


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of a command."""
    seconds, peak, _ = run_measured(cmd, env)
    return seconds, peak


def mergekit_config(method, dirs, density, scales, path: Path) -> None:
    models = []
    for name, scale in zip(("sft", "rl"), scales, strict=True):
        params = {"weight": scale}
        if method not in ("task_arithmetic", "ram"):
            params["density"] = density
        if method.startswith("breadcrumbs"):
            params["gamma"] = 0.01
        if method.startswith("della"):
            params["epsilon"] = min(0.15, density / 2, (1 - density) / 2)
        models.append({"model": str(dirs[name]), "parameters": params})
    config = {"merge_method": method, "base_model": str(dirs["base"]), "models": models,
              "dtype": "bfloat16"}  # fmt: skip
    if method in NORMALIZE:
        config["parameters"] = {"normalize": NORMALIZE[method]}
    path.write_text(yaml.safe_dump(config))


def ours_cmd(method, dirs, vectors, density, scales, out: Path) -> list[str]:
    epsilon = 1e-5 if method == "ram" else min(0.15, density / 2, (1 - density) / 2)
    cmd = [sys.executable, "-m", "deltalab.cli", "merge", "--base", str(dirs["base"]),
           "--out", str(out), "--method", method, "--density", str(density), "--gamma", "0.01",
           "--epsilon", str(epsilon), "--quiet"]  # fmt: skip
    if method in ("dare_ties", "breadcrumbs_ties"):
        cmd.append("--no-normalize")
    for vector, scale in zip(vectors, scales, strict=True):
        cmd += ["--vector", f"{vector}:{scale}"]
    return cmd


def load(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def differences(ours: dict, theirs: dict, ties: dict | None = None) -> tuple[float, float, float]:
    """Worst absolute difference, share of entries beyond one bf16 step, and the share of those
    that lie in `ties` (per tensor: entries whose |τ| ties at a selection boundary)."""
    worst, beyond, total, tied = 0.0, 0, 0, 0
    for name, a in ours.items():
        b = theirs[name].to(a.dtype)
        d = (a.float() - b.float()).abs()
        # one bf16 step at the value: 2^(exponent − 7)
        step = torch.ldexp(torch.ones_like(d), torch.frexp(a.float()).exponent - 8)
        worst = max(worst, float(d.max()))
        far = d > step
        beyond += int(far.sum())
        total += d.numel()
        if ties is not None and name in ties:
            tied += int((far.reshape(-1) & ties[name]).sum())
    return worst, beyond / total, tied / max(beyond, 1)


def boundary_ties(base: dict, finetuned: list[dict], method: str, density: float) -> dict:
    """Per tensor, the entries whose |τ| equals a value at a selection boundary of either
    vector, by our counts (round) or mergekit's (floor): where exact-top-k with lowest-index ties
    and mergekit's unstable sort may keep different entries. bf16 deltas are exact in fp32 and
    coarse, so a boundary value is often shared by many entries."""
    out = {}
    for name, w in base.items():
        if not w.is_floating_point():
            continue
        n, union = w.numel(), torch.zeros(w.numel(), dtype=torch.bool)
        for ft in finetuned:
            mag = (ft[name].float() - w.float()).abs().reshape(-1)
            k_ours, k_mk = max(1, round(density * n)), max(1, int(density * n))
            if method == "ties":
                bounds = {k_ours, k_mk}
            else:  # breadcrumbs: the outliers' edge and the kept band's lower edge
                top_ours = min(int(0.01 * n), n - k_ours)
                top_mk = n - k_mk - max(0, n - k_mk - int(0.01 * n))
                bounds = {top_ours, top_ours + k_ours, top_mk, top_mk + k_mk}
            ordered = torch.sort(mag, descending=True).values
            for c in bounds:
                for rank in (c - 1, c):  # the last kept and the first dropped value
                    if 0 <= rank < n:
                        union |= mag == ordered[rank]
        out[name] = union
    return out


def drop_statistics(merged: dict, base: dict, scale: float, delta: dict) -> tuple[float, float]:
    """For a merge of one vector: share of delta entries kept and mean rescale of a kept one."""
    kept = total = 0
    ratio_sum = 0.0
    for name, w in merged.items():
        d = (w.float() - base[name].float()) / scale
        ref = delta[name]
        moved = ref.abs() > 1e-3
        on = (d.abs() > 0) & moved
        kept += int(on.sum())
        total += int(moved.sum())
        ratio_sum += float((d[on] / ref[on]).sum())
    return kept / max(total, 1), ratio_sum / max(kept, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit", required=True, help="mergekit-yaml of its own venv")
    parser.add_argument("--size", default="0.25B")
    parser.add_argument("--workdir", default="/tmp/deltalab_bench_merge")
    parser.add_argument("--densities", default="0.3,0.7")
    parser.add_argument("--methods", default=",".join(DETERMINISTIC + RANDOM),
                        help="comma-separated subset")  # fmt: skip
    args = parser.parse_args()
    methods = args.methods.split(",")
    from tokenizers import Tokenizer, models

    root = Path(args.workdir) / args.size
    if not (root / "rl" / "config.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        generate(args.size, root, names=("sft", "rl"))
    dirs = {n: root / n for n in ("base", "sft", "rl")}
    for d in dirs.values():  # a merge writes the base's tokenizer beside the weights
        Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")).save(str(d / "tokenizer.json"))
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    vectors = [root / "sft.safetensors", root / "rl.safetensors"]
    vec_time, vec_rss = run([sys.executable, "-m", "deltalab.cli", "task-vector",
                             "--base", str(dirs["base"]), "--finetuned", str(dirs["sft"]),
                             "--finetuned", str(dirs["rl"]), "--top-ratio", "1.0",
                             "--out", str(vectors[0]), "--out", str(vectors[1]), "--quiet"],
                            env)  # fmt: skip
    print(
        f"# {args.size}: dense task vectors built once in {vec_time:.1f} s "
        f"(peak RSS {vec_rss:.2f} GB); each line: our merge alone, and with that build added",
        flush=True,
    )
    mk_env = os.environ | {"OMP_NUM_THREADS": "1"}
    base = load(dirs["base"])
    tie_sets: dict = {}
    for method in methods:
        for density in map(float, args.densities.split(",")):
            for scales in ((1.0, 1.0), (1.2, 0.6)):
                if method in ("task_arithmetic", "ram") and density != float(
                    args.densities.split(",")[0]
                ):
                    continue  # no density to vary
                tag = f"{method}-{density}-{scales[0]}-{scales[1]}"
                ours_out, theirs_out = root / f"ours-{tag}", root / f"mk-{tag}"
                cfg = root / f"{tag}.yml"
                mergekit_config(method, dirs, density, scales, cfg)
                t_mk, rss_mk = run([args.mergekit, str(cfg), str(theirs_out),
                                    "--lazy-unpickle", "--allow-crimes"], mk_env)  # fmt: skip
                t_ours, rss_ours = run(ours_cmd(method, dirs, vectors, density, scales,
                                                ours_out), env)  # fmt: skip
                t_all = t_ours + vec_time
                line = (
                    f"merge size={args.size} {method:<17} density {density:.1f} scales "
                    f"({scales[0]:g}, {scales[1]:g}): ours {t_ours:5.1f} s ({t_all:5.1f} s with "
                    f"the vectors) {rss_ours:4.2f} GB | mergekit {t_mk:5.1f} s {rss_mk:4.2f} GB"
                    f" | {t_mk / t_ours:3.1f}x ({t_mk / t_all:3.1f}x)"
                )
                ours, theirs = load(ours_out), load(theirs_out)
                if method in DETERMINISTIC:
                    trims = method.split("_")[0] in ("ties", "breadcrumbs")
                    key = (method.split("_")[0], density)
                    if trims and key not in tie_sets:
                        fts = [load(dirs["sft"]), load(dirs["rl"])]
                        tie_sets[key] = boundary_ties(base, fts, *key)
                    worst, share, tied = differences(ours, theirs, tie_sets.get(key))
                    line += f" | worst diff {worst:.2e}, beyond 1 bf16 step {share:.2e}"
                    if trims:
                        line += f" ({tied:.1%} of them at tied selection boundaries)"
                print(line, flush=True)
                shutil.rmtree(ours_out, ignore_errors=True)
                shutil.rmtree(theirs_out, ignore_errors=True)
    # DARE / DELLA statistics: one vector (the dense SFT-like one), so kept entries are visible
    delta = {n: load(dirs["sft"])[n].float() - base[n].float() for n in base}
    for method in [m for m in ("dare_linear", "della_linear") if m in methods]:
        for density in map(float, args.densities.split(",")):
            stats = {}
            for who in ("ours", "mergekit"):
                out = root / f"{who}-{method}-one"
                if who == "ours":
                    cmd = ours_cmd(method, dirs, vectors[:1], density, (1.0,), out)
                    run(cmd, env)
                else:
                    cfg = root / "one.yml"
                    mergekit_config(method, dirs, density, (1.0, 0.0), cfg)
                    spec = yaml.safe_load(cfg.read_text())
                    spec["models"] = spec["models"][:1]
                    cfg.write_text(yaml.safe_dump(spec))
                    run([args.mergekit, str(cfg), str(out), "--lazy-unpickle"], mk_env)
                stats[who] = drop_statistics(load(out), base, 1.0, delta)
                shutil.rmtree(out, ignore_errors=True)
            print(f"drops size={args.size} {method:<13} density {density:.1f}: kept share ours "
                  f"{stats['ours'][0]:.4f} mergekit {stats['mergekit'][0]:.4f}; mean rescale of "
                  f"a kept entry ours {stats['ours'][1]:.3f} mergekit {stats['mergekit'][1]:.3f}",
                  flush=True)  # fmt: skip
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
