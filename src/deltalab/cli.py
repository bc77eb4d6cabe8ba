"""`deltalab` console script: tools for params files and arbitrary checkpoints outside the pipeline.

Each domain registers its own subcommands (`register(subparsers)`), so this file only wires them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deltalab.deltas import cli as deltas_cli
from deltalab.errors import DeltalabError
from deltalab.evaluation import cli as evaluation_cli
from deltalab.masks import cli as masks_cli
from deltalab.search import cli as search_cli


def _cmd_params_check(args: argparse.Namespace) -> int:
    from deltalab.config import load_params

    params = load_params(args.file)
    print(f"{args.file}: ok ({len(params.conditions)} conditions, seeds {params.seeds})")
    if unpinned := params.unpinned():
        # valid (a profile may name candidates), but every stage refuses until they are pinned
        print(f"{args.file}: not runnable until pinned:", file=sys.stderr)
        for line in unpinned:
            print(f"  {line}", file=sys.stderr)
        return 2 if args.pinned else 0
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltalab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    params = sub.add_parser("params", help="validate params files")
    params_sub = params.add_subparsers(dest="params_command", required=True)
    check = params_sub.add_parser("check", help="validate a params file against the schema")
    check.add_argument("file", nargs="?", default="params.yaml")
    check.add_argument(
        "--pinned", action="store_true", help="also fail (exit 2) on a hub source not yet pinned"
    )
    check.set_defaults(func=_cmd_params_check)

    evaluation_cli.register(sub)
    deltas_cli.register(sub)
    search_cli.register(sub)
    masks_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeltalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
