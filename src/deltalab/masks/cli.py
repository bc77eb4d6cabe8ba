"""`deltalab masks` on any HF checkpoints, and `deltalab masks export` for other tools.

    deltalab masks --base SFT --finetuned DPO --moments exp_avg.safetensors --density 0.05 \\
        --out masks/                    # magnitude, momentum (with --moments), random
    deltalab masks ... --calibration prefs.jsonl   # + fisher (DPO loss of the pairs)
    deltalab masks export masks/magnitude.safetensors --format pt   # {name: bool tensor}

Scores stream one tensor at a time (the Fisher mask needs the two models in memory).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deltalab.deltas.cli import ratio_arg
from deltalab.errors import ConfigError


def _cmd_masks(args: argparse.Namespace) -> int:
    from deltalab.atomic import atomic_dir
    from deltalab.masks.build import (
        MaskFile,
        build_masks,
        eligible,
        moved_entries,
        score_sources,
    )
    from deltalab.masks.compare import jaccard_table
    from deltalab.masks.report import summary
    from deltalab.tensors.hub import resolve_checkpoint

    if not (args.base and args.finetuned and args.out):
        raise ConfigError("deltalab masks needs --base, --finetuned and --out")
    base, tuned = resolve_checkpoint(args.base), resolve_checkpoint(args.finetuned)
    names = eligible([n for n in base.tensors if base.info(n).is_float], args.exclude)
    methods = ["magnitude", "random"]
    methods += ["momentum"] if args.moments else []
    fisher = None
    if args.calibration:
        from deltalab.data import read_jsonl
        from deltalab.masks.fisher import dpo_fisher
        from deltalab.models import load_causal_lm

        model, tokenizer = load_causal_lm(tuned.path)
        reference, _ = load_causal_lm(base.path)
        pairs = read_jsonl(args.calibration, ("prompt", "chosen", "rejected"))[: args.samples]
        fisher = dpo_fisher(model, reference, tokenizer, pairs, args.beta, names)
        methods.append("fisher")
    sources = score_sources(
        base, tuned, names, methods, moments=args.moments, fisher=fisher, seed=args.seed
    )
    meta = {"density": repr(args.density), "selection": args.selection, "seed": str(args.seed)}
    meta |= {"base": base.source, "finetuned": tuned.source}
    with atomic_dir(args.out) as tmp:
        moved = moved_entries(base, tuned, names)
        files = build_masks(tmp, sources, args.density, args.selection, meta, moved)
        opened = {m: MaskFile(p) for m, p in files.items()}
        table = jaccard_table(opened, "magnitude")
        kept = {m: f.density for m, f in opened.items()}
        result = summary(table, args.density, args.selection, kept)
        (tmp / "jaccard.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for pair, row in result["jaccard"].items():
        print(f"{pair}: Jaccard {row['pooled']:.4f}, random expectation {row['random']:.4f}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from deltalab.masks.build import MaskFile, export_pt

    if args.format != "pt":
        raise ConfigError(f"--format {args.format!r}: only pt is supported")
    mask = MaskFile(args.mask)
    out = Path(args.out or Path(args.mask).with_suffix(".pt"))
    n = export_pt(mask, out)
    print(f"{out}: {n} bool tensors (torch.load(..., weights_only=True))")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "masks",
        help="magnitude/momentum/Fisher/random masks of a finetune, and their Jaccard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base", help="checkpoint before training (directory or hub id)")
    p.add_argument("--finetuned", help="checkpoint after training")
    p.add_argument("--moments", help="safetensors of Adam exp_avg by parameter name")
    p.add_argument("--calibration", help="JSONL {prompt, chosen, rejected}: adds the Fisher mask")
    p.add_argument("--samples", type=int, default=64, help="calibration pairs used")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta of the Fisher loss")
    p.add_argument("--density", type=ratio_arg, default=0.05)
    p.add_argument("--selection", choices=["tensor", "global"], default="tensor")
    p.add_argument("--exclude", nargs="*", default=["embedding", "norm", "lm_head"])
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask")
    p.add_argument("--out", help="output directory (one <method>.safetensors each)")
    p.set_defaults(func=_cmd_masks)
    masks_sub = p.add_subparsers(dest="masks_command")
    export = masks_sub.add_parser("export", help="a mask as {name: bool tensor} for other tools")
    export.add_argument("mask", help="a .safetensors mask file")
    export.add_argument("--format", default="pt", choices=["pt"])
    export.add_argument("--out", help="default: the mask's path with .pt")
    export.set_defaults(func=_cmd_export)
