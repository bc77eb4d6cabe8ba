"""`deltalab analyze`, `deltalab task-vector`, `deltalab merge` on any HF checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from deltalab.errors import ConfigError
from deltalab.merging.method_spec import METHOD_NAMES

# the flags of `deltalab analyze` that carry the include/exclude patterns of `analyze`
_PATTERN_FLAGS = {"include": "--include", "exclude": "--exclude"}


def ratio_arg(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
    if value < 64:
        raise argparse.ArgumentTypeError(f"must be at least 64, got {value}")
    return value


def _labels(specs: list[str], labels: list[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(specs):
            raise ConfigError(f"{len(labels)} --label for {len(specs)} --finetuned")
        return labels
    out: list[str] = []
    for spec in specs:
        name = Path(spec.rstrip("/").split("@")[0]).name or spec
        label, i = name, 2
        while label in out:
            label, i = f"{name}_{i}", i + 1
        out.append(label)
    return out


def _methods(specs: list[str] | None) -> dict[str, str]:
    out = {}
    for spec in specs or []:
        label, sep, method = spec.partition("=")
        if not sep or not label:
            raise ConfigError(f"--method {spec!r}: expected LABEL=sft|dpo|rlvr")
        out[label] = method
    return out


def _cmd_analyze(args: argparse.Namespace) -> int:
    from deltalab.atomic import atomic_dir
    from deltalab.deltas.analysis import DeltaInput, analyze, check_device
    from deltalab.deltas.claims import CLAIM_BY_KEY
    from deltalab.deltas.contrasts import check_contrast
    from deltalab.deltas.params import AnalyzeDeltasParams
    from deltalab.deltas.report import write_report
    from deltalab.deltas.selection import NoTensorMatches, compile_patterns
    from deltalab.deltas.summary import claims
    from deltalab.tensors.hub import resolve_checkpoint

    check_device(args.device)  # before resolving (maybe downloading) any checkpoint
    compile_patterns(args.include, _PATTERN_FLAGS["include"])
    compile_patterns(args.exclude, _PATTERN_FLAGS["exclude"])
    labels = _labels(args.finetuned, args.label)
    contrast = [tuple(c) for c in args.contrast] if args.contrast else None
    if contrast is None:  # every pair of deltas, in the order given
        contrast = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    check_contrast(dict.fromkeys(labels, args.base), contrast)
    overrides = {
        k: v
        for k, v in {
            "atol": args.atol,
            "top_ratio": args.top_ratio,
            "chunk_elements": args.chunk_elements,
            "rank_sketch_size": args.rank_sketch_size,
            "rank_power_iters": args.rank_power_iters,
        }.items()
        if v is not None
    }
    if args.no_rank:
        overrides["rank"] = False
    overrides["contrast"] = contrast
    overrides["methods"] = _methods(args.method)  # declared by the user, never guessed
    try:
        params = AnalyzeDeltasParams(**overrides)
    except ValueError as exc:
        raise ConfigError(f"analyze: {exc}") from exc
    base = resolve_checkpoint(args.base)
    deltas = [
        DeltaInput(label, base, resolve_checkpoint(spec))
        for label, spec in zip(labels, args.finetuned, strict=True)
    ]
    try:
        result = analyze(
            deltas,
            params,
            progress=not args.quiet,
            include=args.include,
            exclude=args.exclude,
            device=args.device,
        )
    except NoTensorMatches as exc:
        raise ConfigError(
            f"no tensor of {exc.of} matches {_PATTERN_FLAGS['include']} {exc.include} "
            f"{_PATTERN_FLAGS['exclude']} {exc.exclude}"
        ) from exc
    with atomic_dir(args.out) as tmp:
        write_report(result, tmp, title=args.title, pattern_names=_PATTERN_FLAGS)
    for row in claims(result):
        if row["subject"] is not None:
            c = CLAIM_BY_KEY[row["claim"]]
            print(
                f"{row['subject']}: {c.measured} = {c.format(row['value'])} "
                f"(published {c.published}): {row['verdict']}"
            )
    if result.selected is not None:
        print(f"selected {result.selected['tensors']} of {result.selected['of']} tensors")
    print(f"wrote {args.out}/report.md ({len(result.tensors)} tensor rows)")
    return 0


def _cmd_task_vector(args: argparse.Namespace) -> int:
    from deltalab.merging.vectors import build_task_vectors
    from deltalab.tensors.hub import resolve_checkpoint

    if len(args.finetuned) != len(args.out):
        raise ConfigError(f"{len(args.finetuned)} --finetuned but {len(args.out)} --out")
    base = resolve_checkpoint(args.base)
    targets = [
        (resolve_checkpoint(f), out) for f, out in zip(args.finetuned, args.out, strict=True)
    ]
    build_task_vectors(
        base,
        targets,
        args.top_ratio,
        rescale=args.rescale,
        values_dtype=args.values_dtype,
        chunk_elements=args.chunk_elements or 2**25,
        progress=not args.quiet,
    )
    print(f"wrote {', '.join(args.out)} (top {args.top_ratio:g} per tensor, {args.rescale=})")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from deltalab.merging.disk import load_vectors, merge, parse_size
    from deltalab.merging.methods import MethodParams
    from deltalab.tensors.hub import resolve_checkpoint

    vectors = load_vectors(args.vector)
    base = resolve_checkpoint(args.base)
    params = MethodParams(
        density=args.density, gamma=args.gamma, epsilon=args.epsilon,
        normalize=not args.no_normalize, seed=args.seed,
    )  # fmt: skip
    merge(
        base,
        vectors,
        args.out,
        dtype=args.dtype,
        max_shard_bytes=parse_size(args.max_shard_size),
        chunk_elements=args.chunk_elements or 2**25,
        progress=not args.quiet,
        method=args.method,
        method_params=params,
    )
    scales = ", ".join(f"{v.path.name}×{s:g}" for v, s in vectors)
    print(f"wrote {args.out} ({args.method}: base + {scales})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the delta subcommands to the `deltalab` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--chunk-elements",
        type=_positive_int,
        default=None,
        help="largest number of elements of one tensor held in fp32 at once (default 2^25)",
    )
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "analyze",
        parents=[common],
        help="per-tensor and per-layer × module statistics of weight deltas",
        description="Analyse finetuned − base for one or more finetuned checkpoints of one base "
        "(local directories or hub ids); deltas of the same base are compared with each other.",
        epilog="example: only the attention projections of layers 0-3, without q_proj, ranks on "
        "the GPU:\n  deltalab analyze --base BASE --finetuned SFT --out reports/attn \\\n"
        "    --include 'layers\\.[0-3]\\.self_attn' --exclude q_proj --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", required=True, help="base checkpoint: directory or hub id[@rev]")
    p.add_argument("--finetuned", required=True, action="append", help="repeatable")
    p.add_argument("--label", action="append", help="names of the deltas (default: dir names)")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--atol", type=float, default=None, help="|Δ| ≤ atol is unchanged (1e-5)")
    p.add_argument("--top-ratio", type=ratio_arg, default=None, help="sparsification (0.3)")
    p.add_argument("--no-rank", action="store_true", help="skip stable/effective ranks")
    p.add_argument("--rank-sketch-size", type=int, default=None, help="randomized SVD rank (64)")
    p.add_argument("--rank-power-iters", type=int, default=None, help="power iterations (1)")
    p.add_argument(
        "--contrast",
        nargs=2,
        action="append",
        metavar=("SFT", "RL"),
        help="two labels compared head-to-head with the published SFT-vs-RLVR numbers "
        "(repeatable; default: every pair of --finetuned, in the order given)",
    )
    p.add_argument(
        "--method",
        action="append",
        metavar="LABEL=METHOD",
        help="training method (sft, dpo, rlvr) of a delta, for the published per-method "
        "numbers (repeatable; a delta without one gets no per-method numbers: methods are "
        "declared, never guessed from a label)",
    )
    p.add_argument(
        "--include",
        action="append",
        metavar="REGEX",
        help="analyse only tensors whose name matches (re.search; repeatable: any match; "
        "default: every tensor); the others are never read",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="REGEX",
        help="skip tensors whose name matches (re.search; repeatable)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the rank math (SVD, randomized sketch) runs (cpu)",
    )
    p.add_argument("--title", default="Weight deltas", help="report title")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "task-vector",
        parents=[common],
        help="write a sparse task vector (finetuned − base, exact top-k per tensor)",
    )
    p.add_argument("--base", required=True)
    p.add_argument(
        "--finetuned",
        required=True,
        action="append",
        help="repeatable with --out: several vectors of one base in one pass over the base",
    )
    p.add_argument("--top-ratio", type=ratio_arg, default=1.0, help="keep ratio in (0, 1] (1.0)")
    p.add_argument(
        "--rescale",
        choices=["none", "tensor", "global"],
        default="none",
        help="norm-preserving rescale of the kept entries",
    )
    p.add_argument("--values-dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--out", required=True, action="append", help="output .safetensors file")
    p.set_defaults(func=_cmd_task_vector)

    p = sub.add_parser(
        "merge",
        parents=[common],
        help="base + Σ scale·τ (or TIES, DARE, DELLA, breadcrumbs, RAM) as an HF checkpoint",
    )
    p.add_argument("--base", required=True)
    p.add_argument(
        "--vector",
        required=True,
        action="append",
        help="PATH[:SCALE] of a task vector (repeatable; scale defaults to 1)",
    )
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None)
    p.add_argument("--max-shard-size", default="5GB", help="shard size (5GB)")
    p.add_argument("--method", choices=METHOD_NAMES, default="task_arithmetic")
    p.add_argument("--density", type=float, default=1.0, help="share of entries each vector keeps")
    p.add_argument("--gamma", type=float, default=0.01, help="breadcrumbs: outlier share dropped")
    p.add_argument(
        "--epsilon", type=float, default=0.15, help="della: keep-probability spread; ram: |τ| floor"
    )
    p.add_argument("--no-normalize", action="store_true", help="TIES-style: sum, no disjoint mean")
    p.add_argument("--seed", type=int, default=0, help="dare, della: the drops' seed")
    p.set_defaults(func=_cmd_merge)
