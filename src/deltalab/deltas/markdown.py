"""report.md of a delta analysis: inputs, totals, the methods compared (update sparsity, rank,
top groups, head-to-head contrasts, published numbers with verdicts), per-module tables, pairs,
resized vocabularies, figures and definitions. One concern: the report's prose and tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from deltalab import __version__
from deltalab.deltas.claims import CLAIM_BY_KEY, NO_SUBJECT, SOURCES
from deltalab.deltas.summary import DEFINITIONS, DeltaSummary, Summary
from deltalab.report.tables import cell, markdown_table

# names of the tensor selection's patterns in report.md (`analyze` keywords by default)
PATTERN_NAMES = {"include": "include", "exclude": "exclude"}


def _delta_row(name: str, m: dict) -> list[str]:
    return [
        name,
        cell(m.get("n_params") and int(m["n_params"])),
        cell(m.get("rel_norm")),
        cell(m.get("rms")),
        cell(m.get("max_abs")),
        cell(m.get("frac_zero"), True),
        cell(m.get("frac_unchanged_atol"), True),
        cell(m.get("frac_unchanged_bf16"), True),
        cell(m.get("energy_share"), True),
        cell(m.get("energy_top_share"), True),
        cell(m.get("energy_kept_sparse"), True),
        cell(m.get("stable_rank")),
        cell(m.get("effective_rank_frac"), True),
    ]


def _group_name(key: object) -> str:
    if isinstance(key, tuple):
        layer, module = key
        return module if layer is None else f"L{layer} {module}"
    return str(key)


def _tops(d: DeltaSummary, by: str, metric: str, pct: bool) -> str:
    return ", ".join(f"{_group_name(k)} {cell(v, pct)}" for k, v in d.top(by, metric))


_CONTRAST_COLS = [
    ("‖τ_a‖/‖τ_b‖", "magnitude_ratio", False),
    ("cosine", "cosine", False),
    ("opposite signs", "opposite_sign", True),
    ("opposite, of both ≠ 0", "opposite_sign_of_both", True),
    ("‖τ_a‖/‖τ_b‖ sparse", "magnitude_ratio_sparse", False),
    ("cosine sparse", "cosine_sparse", False),
    ("opposite sparse", "opposite_sign_sparse", True),
    ("opposite sparse, of both kept", "opposite_sign_of_both_sparse", True),
    ("mask Jaccard", "mask_jaccard", False),
]


FP32_NOTE = (
    "Update sparsity and rank of each delta. Checkpoints stored in fp32, like the tiny "
    "models of this pipeline, hold nothing in bf16: their `bf16-unchanged` share counts the "
    "entries whose update storing both checkpoints in bf16 would round away (|Δ| ≤ 2⁻⁹·|W|, "
    "half a bf16 step of W), not weights that stayed bit-identical as in the published bf16 "
    "numbers.\n\n"
)


def _dtype_note(dtypes: dict[str, str]) -> str:
    """What `bf16-unchanged` means for these checkpoints, from the dtypes they are stored in."""
    kinds = set(dtypes.values())
    if kinds <= {"F32"}:
        return FP32_NOTE
    stored = ", ".join(f"`{source}` {dtype}" for source, dtype in dtypes.items())
    if kinds == {"BF16"}:
        return (
            f"Update sparsity and rank of each delta. Checkpoints stored in bf16 ({stored}): "
            "`bf16-unchanged` counts weights that stayed bit-identical, as in the published "
            "numbers.\n\n"
        )
    return (
        f"Update sparsity and rank of each delta. Checkpoints stored in mixed dtypes ({stored}): "
        "`bf16-unchanged` counts the entries whose update storing both in bf16 would round "
        "away (|Δ| ≤ 2⁻⁹·|W|); it is bit-identity only where both sides are bf16.\n\n"
    )


def methods_markdown(s: Summary) -> str:
    """The methods section: update sparsity, rank and where each delta moves the weights,
    the head-to-head contrasts, and the published numbers beside ours with verdicts."""
    analysis = s.analysis
    p = analysis.params
    ratio_pct = f"{100 * p.top_ratio:g}%"
    out = ["\n## Methods compared: SFT, DPO, RLVR\n\n", _dtype_note(analysis.dtypes)]
    rows = []
    for label, d in s.deltas.items():
        m = d.total
        bf16 = m.get("frac_unchanged_bf16")
        rows.append(
            [
                label,
                d.method or "–",
                cell(m.get("norm")),
                cell(m.get("rel_norm")),
                cell(m.get("frac_zero"), True),
                cell(m.get("frac_unchanged_atol"), True),
                cell(bf16, True),
                cell(None if bf16 is None else 1 - bf16, True),
                cell(m.get("stable_rank")),
                cell(m.get("effective_rank_frac"), True),
            ]
        )
    out.append(
        markdown_table(
            [
                "delta",
                "method",
                "‖Δ‖",
                "‖Δ‖/‖W‖",
                "exact zero",
                f"\\|Δ\\| ≤ {p.atol:g}",
                "bf16-unchanged",
                "updated (bf16)",
                "stable rank",
                "eff. rank / dim",
            ],
            rows,
        )
    )
    out.append("\nWhere each delta moves the weights most (top 3 groups):\n\n")
    out.append(
        markdown_table(
            [
                "delta",
                "modules by energy share",
                "layer × module by energy share",
                "layer × module by ‖Δ‖/‖W‖",
            ],
            [
                [
                    label,
                    _tops(d, "module", "energy_share", True),
                    _tops(d, "layer_module", "energy_share", True),
                    _tops(d, "layer_module", "rel_norm", False),
                ]
                for label, d in s.deltas.items()
            ],
        )
    )
    contrast = s.contrast
    for key, c in contrast.items():
        a, b = c["a"], c["b"]
        base = analysis.deltas[a]["base"]
        out.append(
            f"\n### {a} vs {b}: head-to-head\n\n"
            f"Both are finetuned from `{base}`: τ_a = {a} − base, τ_b = {b} − base. Sparse "
            f"columns keep each tensor's top {ratio_pct} entries of each vector (random masks: "
            f"Jaccard {c['total'].get('mask_jaccard_random', math.nan):.3f}). `opposite signs` "
            "is the share of all entries where both vectors are non-zero with opposite signs "
            "(sign conflicts per parameter); `of both` divides by the entries both are "
            "non-zero at (kept by both, when sparse) instead.\n\n"
        )
        table_rows = [
            [f"**{key}**"] + [cell(c["total"].get(k), pct) for _, k, pct in _CONTRAST_COLS]
        ]
        table_rows += [
            [m] + [cell(v.get(k), pct) for _, k, pct in _CONTRAST_COLS]
            for m, v in c["modules"].items()
        ]
        out.append(markdown_table([""] + [h for h, _, _ in _CONTRAST_COLS], table_rows))
    contrast_pairs = [(c["a"], c["b"]) for c in contrast.values()]
    out.append(
        "\n### Published numbers beside ours\n\n"
        "Verdicts are computed from our numbers by the rule in each row (x = ours; bands "
        "include their ends and are tried in order). SFT-vs-RLVR rows use the contrasted "
        f"pairs ({', '.join(f'{a} vs {b}' for a, b in contrast_pairs) or 'none'}); "
        "per-method rows every delta whose method is dpo/rlvr (RL) or sft.\n\n"
    )
    rows = []
    for r in s.claims:
        c = CLAIM_BY_KEY[r["claim"]]
        subject = r["subject"]
        if subject is None:
            measured = f"{c.measured} ({NO_SUBJECT[c.subjects]})"
        elif c.subjects == "contrast":
            ab = contrast[subject]
            a, b = ab["a"], ab["b"]
            measured = c.measured.replace("τ_a", f"τ_{a}").replace("τ_b", f"τ_{b}")
            measured += f", {a} vs {b}"
        else:
            measured = f"{c.measured}, {subject}"
        rows.append(
            [
                c.text,
                c.source,
                c.published,
                measured,
                c.format(r["value"]),
                c.rule(),
                f"**{r['verdict']}**",
            ]
        )
    out.append(
        markdown_table(
            [
                "published claim",
                "source",
                "published",
                "measured here",
                "ours",
                "rule",
                "holds on these models?",
            ],
            rows,
        )
    )
    out.append("\nSources: " + "; ".join(f"{k}: {v}" for k, v in SOURCES.items()) + ".\n")
    return "".join(out)


def markdown(
    s: Summary,
    figures: Sequence[tuple[str, str]],
    title: str,
    pattern_names: Mapping[str, str] = PATTERN_NAMES,
) -> str:
    """A readable report: inputs, totals, modules, pairs, resized vocabularies, figures.

    `figures`: (caption, file name); `pattern_names`: how the tensor selection's include and
    exclude patterns are named (the command line: by its flags)."""
    analysis = s.analysis
    p = analysis.params
    top_pct, ratio_pct = f"{100 * p.energy_top_fraction:g}%", f"{100 * p.top_ratio:g}%"
    header = [
        "",
        "params",
        "‖Δ‖/‖W‖",
        "RMS",
        "max abs",
        "zero",
        f"≤ {p.atol:g}",
        "bf16-unchanged",
        "energy share",
        f"top-{top_pct} energy",
        f"kept at {ratio_pct}",
        "stable rank",
        "eff. rank / dim",
    ]
    out = [f"# {title}\n", f"deltalab {__version__}. Definitions at the end.\n", "## Inputs\n"]
    out.append(
        markdown_table(
            ["delta", "base", "finetuned"],
            [[k, f"`{v['base']}`", f"`{v['finetuned']}`"] for k, v in analysis.deltas.items()],
        )
    )
    if analysis.selected is not None:
        sel = analysis.selected
        pats = [f"{pattern_names['include']} `{x}`" for x in sel["include"]]
        pats += [f"{pattern_names['exclude']} `{x}`" for x in sel["exclude"]]
        out.append(f"\nSelected tensors: {sel['tensors']} of {sel['of']} ({', '.join(pats)}).\n")
    out.append("\n## Totals\n")
    out.append(markdown_table(header, [_delta_row(k, d.total) for k, d in s.deltas.items()]))
    out.append(methods_markdown(s))
    for label, d in s.deltas.items():
        out.append(f"\n## {label}: by module\n")
        out.append(markdown_table(header, [_delta_row(m, v) for m, v in d.modules.items()]))
        if d.resized:
            out.append("\nResized tensors (the shared rows are compared):\n")
            out.append(
                markdown_table(
                    ["tensor", "base rows", "finetuned rows", "‖extra rows‖"],
                    [
                        [
                            f"`{t}`",
                            cell(int(r["rows_base"])),
                            cell(int(r["rows_finetuned"])),
                            cell(r["extra_rows_norm"]),
                        ]
                        for t, r in d.resized.items()
                    ],
                )
            )
        if d.skipped:
            out.append(f"\nNon-float tensors skipped: {len(d.skipped)}.\n")
    if s.pairs:
        rho = p.top_ratio
        out.append(
            f"\n## Deltas of the same base\n\nSparse columns keep each tensor's top {ratio_pct} "
            f"entries of each delta; two independent masks would have Jaccard "
            f"{rho / (2 - rho):.3f}.\n\n"
        )
        ph = [
            "",
            "cosine",
            "sign agree",
            "‖a‖/‖b‖",
            "cosine (sparse)",
            "sign agree (sparse)",
            "‖a‖/‖b‖ (sparse)",
            "mask Jaccard",
        ]
        keys = [
            "cosine",
            "sign_agreement",
            "magnitude_ratio",
            "cosine_sparse",
            "sign_agreement_sparse",
            "magnitude_ratio_sparse",
            "mask_jaccard",
        ]
        rows = []
        for key, pr in s.pairs.items():
            rows.append([f"**{key}**"] + [cell(pr.total.get(k)) for k in keys])
            rows += [[m] + [cell(v.get(k)) for k in keys] for m, v in pr.modules.items()]
        out.append(markdown_table(ph, rows))
    if figures:
        out.append("\n## Figures\n")
        for caption, name in figures:
            out.append(f"\n**{caption}**\n\n![{caption}]({name})\n")
    out.append("\n## Definitions\n")
    for k, v in DEFINITIONS.items():
        out.append(f"- `{k}`: {v}\n")
    out.append(
        "\nRanks of matrices with min(rows, cols) ≤ "
        f"{p.rank_exact_max_dim} that fit one chunk are exact; larger ones come from a "
        f"randomized SVD (top {p.rank_sketch_size} singular values, {p.rank_power_iters} power "
        "iteration(s)) with the remaining energy spread evenly over the other singular values.\n"
        "Per-tensor rows: `tensors.csv`; layer × module: `layers.csv`"
        + ("; pairs: `pairs.csv`, `pair_layers.csv`" if s.pairs else "")
        + ".\n"
    )
    return "".join(out)
