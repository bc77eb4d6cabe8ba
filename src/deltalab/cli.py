"""`deltalab` console script: tools for params files and arbitrary checkpoints outside the pipeline.

Each domain registers its own subcommands (`register(subparsers)`), so this file only wires them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deltalab.errors import DeltalabError


def _cmd_params_check(args: argparse.Namespace) -> int:
    from deltalab.config import load_params

    params = load_params(args.file)
    print(f"{args.file}: ok ({len(params.conditions)} conditions, seeds {params.seeds})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltalab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    params = sub.add_parser("params", help="validate params files")
    params_sub = params.add_subparsers(dest="params_command", required=True)
    check = params_sub.add_parser("check", help="validate a params file against the schema")
    check.add_argument("file", nargs="?", default="params.yaml")
    check.set_defaults(func=_cmd_params_check)

    for module in _domain_clis():
        module.register(sub)
    return parser


def _domain_clis() -> list:
    import importlib

    modules = []
    for name in ("deltalab.evaluation.cli", "deltalab.deltas.cli"):
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:  # a domain not built yet
            if exc.name != name:
                raise
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeltalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
