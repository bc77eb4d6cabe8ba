"""Start-up cost of every stage: the seconds a stage process spends importing before it works.

Each stage script is imported (not run: its `main` sits behind `if __name__ == "__main__"`) in a
fresh interpreter, which is what a `dvc repro` pays ~60 times on the tiny profile. The same
scripts of a reference revision (default: the commit before issue 19's layout work) are timed in
the same run, alternating, so both see the same machine load. Also printed: whether the stage
imported torch, transformers and trl at all.

    python bench/startup.py                      # this checkout vs the reference revision
    python bench/startup.py --reference HEAD~3 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "198839d"  # main before the issue-19 layout (tensors/, merging/, schema/)

PROBE = """
import importlib.util, json, sys, time
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("stage_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
took = time.perf_counter() - t
heavy = [m for m in ("torch", "transformers", "trl", "matplotlib", "pandas") if m in sys.modules]
print(json.dumps({"seconds": took, "heavy": heavy}))
"""


def probe(repo: Path, script: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(repo / script)],
        cwd=repo,
        env={"PYTHONPATH": str(repo / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=REFERENCE, help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(ref), args.reference],
            cwd=ROOT,
            check=True,
        )
        try:
            scripts = sorted(p.name for p in (ROOT / "stages").glob("*.py"))
            total = {"reference": 0.0, "now": 0.0}
            print(f"{'stage':<16} {'reference s':>11} {'now s':>7} {'ratio':>6}  imports now")
            for name in scripts:
                runs: dict[str, list[float]] = {"reference": [], "now": []}
                heavy: list[str] = []
                for _ in range(args.repeats):  # alternate, so both see the same load
                    if (ref / "stages" / name).is_file():
                        runs["reference"].append(probe(ref, f"stages/{name}")["seconds"])
                    now = probe(ROOT, f"stages/{name}")
                    runs["now"].append(now["seconds"])
                    heavy = now["heavy"]
                med = {k: statistics.median(v) if v else float("nan") for k, v in runs.items()}
                for k, v in med.items():
                    total[k] += 0.0 if v != v else v
                print(
                    f"{name[:-3]:<16} {med['reference']:>11.2f} {med['now']:>7.2f} "
                    f"{med['now'] / med['reference']:>6.2f}  {', '.join(heavy) or '-'}"
                )
            print(
                f"startup summary: {len(scripts)} stage scripts, sum of medians "
                f"{total['reference']:.1f} s -> {total['now']:.1f} s "
                f"({total['now'] / total['reference']:.2f}x; reference {args.reference})"
            )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref)], cwd=ROOT)


if __name__ == "__main__":
    main()
