"""`deltalab evaluate` and `deltalab compare-predictions`: the evaluation on any checkpoint.

Registered by `deltalab.cli` (add "deltalab.evaluation.cli" to its domain list); also runnable as
`python -m deltalab.evaluation.cli ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from deltalab.errors import DeltalabError


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from deltalab.evaluation.params import EvaluateParams
    from deltalab.evaluation.scoring import evaluate_checkpoint

    params = EvaluateParams(
        max_new_tokens=args.max_new_tokens,
        probes_max_new_tokens=args.probes_max_new_tokens,
        batch_size=args.batch_size,
        gsm8k_limit=args.limit,
        probes=args.probes is not None,
    )
    result = evaluate_checkpoint(
        args.checkpoint,
        args.gsm8k,
        args.probes,
        args.metrics,
        args.predictions,
        params,
        device=args.device,
        dtype=args.dtype,
    )
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from deltalab.atomic import write_json
    from deltalab.evaluation.compare import compare_prediction_files
    from deltalab.evaluation.params import CompareParams

    params = CompareParams(n_bootstrap=args.n_bootstrap, confidence=args.confidence, seed=args.seed)
    paths = {("reference", 0, "model"): args.reference, ("treatment", 0, "model"): args.treatment}
    result = compare_prediction_files(paths, params, reference="reference", treatment="treatment")
    text = json.dumps(result["model"], indent=2, sort_keys=True)
    if args.out:
        write_json(args.out, result["model"])
    print(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the evaluation subcommands to the `deltalab` parser."""
    ev = sub.add_parser("evaluate", help="greedy GSM8K (+ probes) evaluation of a checkpoint")
    ev.add_argument("checkpoint", help="HF checkpoint directory (model + tokenizer)")
    ev.add_argument("--gsm8k", required=True, help="JSONL {question, answer ending '#### N'}")
    ev.add_argument("--probes", help="JSONL {id, family, question, answer} (optional)")
    ev.add_argument("--metrics", required=True, help="output metrics JSON")
    ev.add_argument("--predictions", required=True, help="output per-question JSONL")
    ev.add_argument("--max-new-tokens", type=int, default=256)
    ev.add_argument("--probes-max-new-tokens", type=int, default=None)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--limit", type=int, default=None, help="first N GSM8K questions")
    ev.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ev.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ev.set_defaults(func=_cmd_evaluate)

    cmp = sub.add_parser(
        "compare-predictions", help="paired statistics of two predictions files (same questions)"
    )
    cmp.add_argument("reference", help="predictions JSONL of the reference (e.g. baseline)")
    cmp.add_argument("treatment", help="predictions JSONL of the treatment (e.g. mul_tokens)")
    cmp.add_argument("--out", help="also write the result as JSON")
    cmp.add_argument("--n-bootstrap", type=int, default=10_000)
    cmp.add_argument("--confidence", type=float, default=0.95)
    cmp.add_argument("--seed", type=int, default=0)
    cmp.set_defaults(func=_cmd_compare)


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    parser = argparse.ArgumentParser(prog="deltalab")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DeltalabError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
