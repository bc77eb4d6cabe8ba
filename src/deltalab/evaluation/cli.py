"""`deltalab evaluate` and `deltalab compare-predictions`: the evaluation on any checkpoint.

Registered by `deltalab.cli` (add "deltalab.evaluation.cli" to its domain list); also runnable as
`python -m deltalab.evaluation.cli ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from deltalab.errors import ConfigError, DeltalabError


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
        engine=args.engine,
        fit_context=True,  # a default budget past a small model's context is capped, not fatal
    )
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from deltalab.atomic import write_json
    from deltalab.evaluation.compare import compare_prediction_files
    from deltalab.evaluation.params import CompareParams

    params = CompareParams(n_bootstrap=args.n_bootstrap, confidence=args.confidence, seed=args.seed)
    paths = {("reference", 0, "model"): args.reference, ("treatment", 0, "model"): args.treatment}
    result = compare_prediction_files(paths, params, ("reference", "treatment"))
    text = json.dumps(result["model"], indent=2, sort_keys=True)
    if args.out:
        write_json(args.out, result["model"])
    print(text)
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from deltalab.evaluation.engine import open_engine
    from deltalab.evaluation.params import SampleParams
    from deltalab.evaluation.prompts import format_prompt
    from deltalab.tokens import decode_mul_tokens

    if args.question is None and args.file is None and not args.interactive:
        raise ConfigError("give --question, --file or --interactive")
    if args.file is not None and not Path(args.file).is_file():
        raise ConfigError(f"{args.file}: no such questions file")
    sampling = SampleParams(
        samples=args.num_samples,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    engine = open_engine(args.checkpoint, args.engine, device=args.device, dtype=args.dtype)

    def answer(questions: list[str]) -> None:
        prompts = [format_prompt(engine.tokenizer, q) for q in questions]
        kwargs = sampling.sampling_kwargs()
        kwargs["max_new_tokens"] = engine.fit_new_tokens(prompts, kwargs["max_new_tokens"])
        rows = engine.sample(prompts, **kwargs)
        for question, samples in zip(questions, rows, strict=True):
            print(f"Q: {question}")
            for i, s in enumerate(samples):
                stop = "EOS" if s.stopped else f"no EOS after {s.num_tokens} tokens"
                # mul tokens as the facts they stand for (`6*9=54`), like answer extraction
                print(f"  [{i}] ({stop}) {decode_mul_tokens(s.text).strip()}")

    if args.question is not None:
        answer([args.question])
    if args.file is not None:
        lines = [x.strip() for x in Path(args.file).read_text().splitlines() if x.strip()]
        answer(lines)
    if args.interactive:
        for line in sys.stdin:
            if line.strip():
                answer([line.strip()])
    return 0


def _label(path: str, taken: list[str]) -> str:
    name = Path(path.rstrip("/")).name or path
    label, i = name, 2
    while label in taken:
        label, i = f"{name}_{i}", i + 1
    return label


def _cmd_behavior(args: argparse.Namespace) -> int:
    from deltalab.evaluation.behavior import run_behavior
    from deltalab.evaluation.params import BehaviorParams
    from deltalab.evaluation.scoring import load_gsm8k
    from deltalab.report.behavior import write_behavior

    for path in args.checkpoints:
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"{path}: not a checkpoint directory (no config.json)")
    labels: list[str] = []
    for path in args.checkpoints:
        labels.append(_label(path, labels))
    rows = load_gsm8k(args.questions, limit=args.limit)
    # every later checkpoint compared with the first, paired
    params = BehaviorParams(
        samples=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, seed=args.seed, models=labels,
        pairs=[[label, labels[0]] for label in labels[1:]],
    )  # fmt: skip
    result = run_behavior(
        dict(zip(labels, args.checkpoints, strict=True)), rows, params, device=args.device,
        dtype=args.dtype, progress=True, engine=args.engine, fit_context=True,
    )  # fmt: skip
    out = Path(args.out)
    write_behavior(
        result.metrics, result.records, labels,
        metrics_path=out / "behavior.json", plot_csv=out / "passk.csv", report_dir=out / "report",
        title=f"{', '.join(labels)} ({len(rows)} questions)",
    )  # fmt: skip
    for label in labels:
        m = result.metrics["models"][label]
        print(
            f"{label}: greedy {m['greedy']['accuracy']:.3f}, pass@1 {m['pass_at_k']['k1']:.3f}, "
            f"pass@{args.samples} {m['pass_at_k'][f'k{args.samples}']:.3f}"
        )
    print(f"wrote {out}/behavior.json, {out}/report/")
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
    ev.add_argument(
        "--engine", choices=["hf", "vllm"], default="hf", help="generation engine (vllm: CUDA only)"
    )
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

    sm = sub.add_parser(
        "sample",
        help="sample answers of a checkpoint to questions (prompt format of the evaluation)",
        epilog='example: deltalab sample models/baseline/seed0/rlvr --question "What is 7 times '
        '8?" --num-samples 4 --temperature 0.8',
    )
    sm.add_argument("checkpoint", help="HF checkpoint directory (model + tokenizer)")
    sm.add_argument("--question", help="one question")
    sm.add_argument("--file", help="a text file, one question per line")
    sm.add_argument("--interactive", action="store_true", help="read questions from stdin")
    sm.add_argument("--num-samples", type=int, default=1)
    sm.add_argument("--temperature", type=float, default=1.0)
    sm.add_argument("--max-new-tokens", type=int, default=128)
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sm.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    sm.add_argument(
        "--engine", choices=["hf", "vllm"], default="hf", help="generation engine (vllm: CUDA only)"
    )
    sm.set_defaults(func=_cmd_sample)

    bh = sub.add_parser(
        "behavior",
        help="the behavior stage's measures for several checkpoints on the same questions",
        epilog="example: deltalab behavior models/baseline/seed0/sft_tulu "
        "models/baseline/seed0/rlvr --questions data/prepared/gsm8k/test.jsonl --limit 50 "
        "--out reports/sft_vs_rlvr  (every checkpoint is compared, paired, with the first)",
    )
    bh.add_argument("checkpoints", nargs="+", help="checkpoint directories sharing a tokenizer")
    bh.add_argument("--questions", required=True, help="GSM8K-format JSONL {question, answer}")
    bh.add_argument("--out", required=True, help="output directory")
    bh.add_argument("--limit", type=int, default=None, help="first N questions")
    bh.add_argument("--samples", type=int, default=8, help="sampled answers per question")
    bh.add_argument("--temperature", type=float, default=1.0)
    bh.add_argument("--max-new-tokens", type=int, default=64)
    bh.add_argument("--batch-size", type=int, default=128)
    bh.add_argument("--seed", type=int, default=0)
    bh.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bh.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    bh.add_argument(
        "--engine", choices=["hf", "vllm"], default="hf", help="generation engine (vllm: CUDA only)"
    )
    bh.set_defaults(func=_cmd_behavior)


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
