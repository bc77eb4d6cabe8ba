"""The README's results blocks, generated from the committed metrics by the report's own code.

A block is the text between `<!-- results:NAME -->` and `<!-- /results:NAME -->`, NAME one of the
report's sections (conditions, post_training, behavior, deltas, merge, masks). `--write` fills every
block from `metrics/` and `params.yaml` (and docs/deltas.md's `<!-- generated:claims -->` table
from `deltalab.deltas.claims`); `--check` exits 1 when a block differs (the test suite runs it, so
the docs can never disagree with the metrics and code they show).

    python tools/readme_results.py --write
    python tools/readme_results.py --check
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BLOCK = re.compile(r"(<!-- results:(\w+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)
# docs/deltas.md: the published claims and their verdict bands, as the code holds them
CLAIMS = re.compile(r"(<!-- generated:claims -->\n)(.*?)(<!-- /generated:claims -->)", re.S)


def render(readme: str, root: Path = ROOT) -> str:
    from deltalab.config import load_params
    from deltalab.deltas.claims import CLAIM_BY_KEY
    from deltalab.report.study import section

    params = load_params(root / "params.yaml")

    def fill(m: re.Match) -> str:
        body = section(params, root, CLAIM_BY_KEY, m.group(2))
        return f"{m.group(1)}{body}{m.group(4)}"

    return BLOCK.sub(fill, readme)


def render_docs(text: str) -> str:
    from deltalab.deltas.claims import claims_table

    return CLAIMS.sub(lambda m: f"{m.group(1)}{claims_table()}{m.group(3)}", text)


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    files = {
        root / "README.md": lambda text: render(text, root),
        root / "docs/deltas.md": render_docs,
    }
    stale = []
    for path, fill in files.items():
        current = path.read_text()
        wanted = fill(current)
        if args.write:
            path.write_text(wanted)
        elif wanted != current:
            stale.append(path.relative_to(root))
    if stale:
        print(f"generated blocks differ from metrics/ and the code in {', '.join(map(str, stale))} "
              "(run `python tools/readme_results.py --write`)")  # fmt: skip
        return 1
    print(f"generated blocks {'written' if args.write else 'match'}: "
          f"{', '.join(str(p.relative_to(root)) for p in files)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
