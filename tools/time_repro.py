"""Time every stage of a `dvc repro`: the wall seconds from one "Running stage" line to the next.

The repro's own output passes through unchanged. At the end a markdown table is written: each
stage's seconds, then the seconds per stage kind (`pretrain@*` summed), then the total. Stages DVC
skipped (unchanged) take no time and are not listed.

    python tools/time_repro.py --out runs/repro_times.md              # dvc repro
    python tools/time_repro.py --out times.md -- --force -s search@baseline-0
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

RUNNING = re.compile(r"Running stage '([^']+)'")


class StageClock:
    """Seconds per stage, from a repro's output lines fed as they arrive."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.start = self.last = clock()
        self.current: str | None = None
        self.seconds: dict[str, float] = {}

    def feed(self, line: str) -> None:
        if m := RUNNING.search(line):
            self._close()
            self.current = m.group(1)

    def finish(self) -> tuple[dict[str, float], float]:
        self._close()
        return self.seconds, self.last - self.start

    def _close(self) -> None:
        now = self.clock()
        if self.current is not None:
            self.seconds[self.current] = now - self.last
        self.last = now


def table(seconds: dict[str, float], total: float) -> str:
    kinds: dict[str, list[float]] = defaultdict(list)
    for stage, s in seconds.items():
        kinds[stage.split("@")[0]].append(s)
    rows = ["| stage | s |", "|---|---:|"]
    rows += [f"| {stage} | {s:.0f} |" for stage, s in seconds.items()]
    rows += ["", "| stage kind | runs | s | share |", "|---|---:|---:|---:|"]
    for kind, runs in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        rows.append(f"| {kind} | {len(runs)} | {sum(runs):.0f} | {sum(runs) / total:.0%} |")
    rows += ["", f"total: {total:.0f} s ({total / 60:.1f} min), {len(seconds)} stages run"]
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="markdown table of the times")
    parser.add_argument("repro_args", nargs="*", help="passed to dvc repro (after --)")
    args = parser.parse_args()
    cmd = ["dvc", "repro", *args.repro_args]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # a stage's line must arrive when printed
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "env": env}
    proc = subprocess.Popen(cmd, **out)
    clock = StageClock()
    for line in proc.stdout:
        clock.feed(line)
        sys.stdout.write(line)
        sys.stdout.flush()
    seconds, total = clock.finish()
    if proc.wait() != 0:
        print(f"dvc repro exited {proc.returncode}; times not written", file=sys.stderr)
        return proc.returncode
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(seconds, total))
    print(table(seconds, total))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
