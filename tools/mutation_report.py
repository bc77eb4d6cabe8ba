"""Kill rates of the last `mutmut run`, net of the survivors judged equivalent.

    python tools/mutation_report.py            # table + open survivors (exit 1 if any is open)

Reads mutmut's results (mutants/**/*.py.meta) and the hand-written equivalence list in
docs/mutation-survivors.md (`### <module>` headings, then `- <mutant>: why` lines). A listed mutant
that no longer survives (killed now, or renumbered after an edit) is reported as stale.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.__main__ import status_by_exit_code

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mutation-survivors.md"
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def equivalent_by_module(doc: Path) -> dict[str, set[str]]:
    listed: dict[str, set[str]] = {}
    module = None
    for line in doc.read_text().splitlines():
        if m := re.match(r"### (\S+\.py)", line):
            module = m.group(1)
            listed.setdefault(module, set())
        elif (m := re.match(r"- (x\S+?):", line)) and module:
            listed[module].add(m.group(1))
    return listed


def main() -> int:
    listed = equivalent_by_module(DOC)
    print("| module | generated | checked | killed (incl. timeouts) | survived | equivalent "
          "| open | kill rate among non-equivalent |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    problems = []
    for meta in sorted((ROOT / "mutants" / "src").rglob("*.py.meta")):
        module = str(meta.relative_to(ROOT / "mutants" / "src"))[: -len(".meta")]
        status = {
            key.rsplit(".", 1)[-1]: status_by_exit_code[code]
            for key, code in json.loads(meta.read_text())["exit_code_by_key"].items()
        }
        counts = Counter(status.values())
        survived = {name for name, s in status.items() if s == "survived"}
        equivalent = listed.get(module, set())
        open_ = sorted(survived - equivalent)
        stale = sorted(equivalent - survived)
        killed = sum(counts[s] for s in KILLED)
        checked = len(status) - counts["not checked"]
        rate = killed / (killed + len(open_)) if killed + len(open_) else 1.0
        print(
            f"| {module} | {len(status)} | {checked} | {killed} | {len(survived)} "
            f"| {len(survived & equivalent)} | {len(open_)} | {100 * rate:.1f}% |"
        )
        problems += [f"{module}: open survivor {n}" for n in open_]
        problems += [f"{module}: listed as equivalent but {status.get(n, 'absent')}: {n}"
                     for n in stale]  # fmt: skip
        other = set(counts) - KILLED - {"survived", "not checked"}
        problems += [f"{module}: {counts[s]} {s}" for s in sorted(other)]
    print("\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
