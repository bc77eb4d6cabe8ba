"""The study on one page: `reports/index.md`, its self-contained HTML twin, and the headline
metrics a sweep is judged by.

It reads what the stages wrote and formats it; it computes no statistic of its own. Every table
row names the file and key its numbers come from, and every comparison gets a verdict from the
numbers by one rule (`verdict`): a difference is a finding only when its seed-level interval
excludes 0; with one seed the question-level interval can say nothing about training runs, and the
verdict says so. Sections appear for the workflows the profile runs; the others are left out.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltalab.report.tables import cell, table_lines

PASS_AT = ("k1", "k2", "k4", "k8")
INDEX_MD = Path("reports/index.md")
INDEX_HTML = Path("reports/index.html")
HEADLINE = Path("metrics/headline.json")


@dataclass
class Page:
    """The report being written: markdown lines, the figures it shows, headline numbers.
    `embed_figures` False leaves figures out (the README, where reports/ are DVC outputs);
    `per_seed` False leaves out each seed's detail tables where a seed-level table stands above
    them (the README's short results; the report keeps everything)."""

    root: Path
    embed_figures: bool = True
    per_seed: bool = True
    lines: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    headline: dict[str, float | None] = field(default_factory=dict)
    # the published claims by key (`deltas.claims.CLAIM_BY_KEY`: text, published, format)
    claims: Mapping[str, Any] = field(default_factory=dict)
    _loaded: dict[str, dict | None] = field(default_factory=dict, repr=False)

    def load(self, path: str) -> dict | None:
        """A metrics file of the study (None when absent), read once per page: several sections
        read compare.json."""
        if path not in self._loaded:
            self._loaded[path] = load(self.root, path)
        return self._loaded[path]

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.lines.extend([*table_lines(header, rows), ""])

    def figure(self, path: Path, caption: str) -> None:
        """A stage's own plot, linked relative to `reports/` (when the stage wrote it)."""
        if self.embed_figures and (self.root / path).is_file():
            rel = os.path.relpath(path, "reports")
            self.add(f"![{caption}]({rel})", "")
            self.figures.append(path)


def load(root: Path, path: Path | str) -> dict | None:
    file = root / path
    return json.loads(file.read_text()) if file.is_file() else None


def ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "–"
    return f"[{low:+.3f}, {high:+.3f}]"


def verdict(entry: Mapping[str, Any], n_seeds: int) -> str:
    """A difference is a finding only when the seed-level interval excludes 0. Seeds whose
    differences are all equal give a zero-width t-interval: the spread is unmeasured, not zero."""
    if n_seeds < 2 or entry.get("seeds_ci_low") is None:
        return "one seed: not a finding"
    # e.g. two seeds six reward-accuracy steps apart each (float rounding: not exactly 0)
    if entry.get("seeds_sd") is not None and entry["seeds_sd"] < 1e-9:
        return f"not established ({n_seeds} seeds, identical differences: no spread to measure)"
    low, high = entry["seeds_ci_low"], entry["seeds_ci_high"]
    if low > 0 or high < 0:
        return f"**finding** ({'higher' if low > 0 else 'lower'})"
    return f"not established ({n_seeds} seeds)"


def _run_section(page: Page, params: Any, profile: str) -> None:
    study = params.study
    trained = [n for n, s in study.checkpoints.items() if s.recipe != "import"]
    imported = [n for n, s in study.checkpoints.items() if s.recipe == "import"]
    page.add(
        "## What was run",
        "",
        f"- profile: `{profile}`; conditions {', '.join(params.conditions)}; seeds "
        f"{', '.join(map(str, params.seeds))}; delta track "
        f"{', '.join(params.delta_track.conditions)} × seeds "
        f"{', '.join(map(str, params.delta_track.seeds))}",
        f"- checkpoints: {', '.join(f'`{n}`' for n in trained) or 'none'} trained here"
        + (f"; {', '.join(f'`{n}`' for n in imported)} imported" if imported else ""),
        f"- data: {params.data.source}; GSM8K test limit "
        f"{params.evaluate.gsm8k_limit or 'none (the whole test set)'}",
        "",
    )


def _conditions_section(page: Page, params: Any) -> None:
    compare = page.load("metrics/compare.json")
    pair = params.study.compare_conditions
    if not compare or not pair:
        return
    ref, trt = pair
    page.add(
        f"## Domain tokens: {trt} vs {ref}",
        "",
        "Per model: accuracies over all seeds, the difference, its seed-level interval (a "
        "t-interval over the per-seed differences: training-run variance) and its question-level "
        "interval (questions resampled with their seeds: question sampling only).",
        "",
    )
    header = ["model", "task", ref, trt, "difference", "seeds CI", "questions CI", "McNemar p",
              "verdict", "source"]  # fmt: skip
    rows = []
    for model in params.study.evaluate:
        block = compare.get(model)
        if not block:
            continue
        n_seeds = block.get("n_seeds", 1)
        tasks = [("GSM8K", block["gsm8k"], f"{model}.gsm8k")]
        probes = block.get("probes", {})
        if "times_table" in probes:
            tasks.append(("times table", probes["times_table"], f"{model}.probes.times_table"))
        for task, e, key in tasks:
            rows.append([
                model, task, cell(e.get(f"{ref}_accuracy")), cell(e.get(f"{trt}_accuracy")),
                f"{e['difference']:+.3f}", ci(e.get("seeds_ci_low"), e.get("seeds_ci_high")),
                ci(e.get("questions_ci_low"), e.get("questions_ci_high")), cell(e["mcnemar_p"]),
                verdict(e, n_seeds), f"`metrics/compare.json` › `{key}`",
            ])  # fmt: skip
            if task == "GSM8K" and model == params.study.evaluate[-1]:
                page.headline[f"gsm8k/{model}/{ref}"] = e.get(f"{ref}_accuracy")
                page.headline[f"gsm8k/{model}/{trt}"] = e.get(f"{trt}_accuracy")
                page.headline[f"gsm8k/{model}/difference"] = e["difference"]
                page.headline[f"gsm8k/{model}/seeds_ci_low"] = e.get("seeds_ci_low")
                page.headline[f"gsm8k/{model}/seeds_ci_high"] = e.get("seeds_ci_high")
    page.table(header, rows)
    page.figure(Path("reports/evaluation/accuracy.png"), "accuracy by condition and seed")


def _post_training(page: Page, params: Any) -> dict[str, dict[str, Any]]:
    """compare.json's post-training comparisons of this study's checkpoints, by condition."""
    if not params.study.compare_conditions:  # no compare stage in this study
        return {}
    post = (page.load("metrics/compare.json") or {}).get("post_training") or {}
    declared = params.study.checkpoints
    return {
        cond: {
            name: block
            for name, block in comparisons.items()
            if all(n in declared for n in name.split("_vs_"))  # not another study's run
        }
        for cond, comparisons in post.items()
    }


SEED_HEADER = ["condition", "comparison", "treatment", "reference", "difference", "seeds CI",
               "verdict", "source"]  # fmt: skip


def _seed_row(cond: str, name: str, e: Mapping[str, Any], n_seeds: int, key: str) -> list[str]:
    """A comparison over the delta-track seeds: the means, the difference, its seed-level
    interval and the verdict; `key`: where it is in compare.json."""
    treatment, reference = name.split("_vs_")
    return [
        cond, f"{treatment} vs {reference}", cell(e.get(f"{treatment}_accuracy")),
        cell(e.get(f"{reference}_accuracy")), f"{e['difference']:+.3f}",
        ci(e.get("seeds_ci_low"), e.get("seeds_ci_high")), verdict(e, n_seeds),
        f"`metrics/compare.json` › `{key}`",
    ]  # fmt: skip


def _post_training_section(page: Page, params: Any) -> None:
    post = _post_training(page, params)
    if not any(post.values()):
        return
    declared = params.study.checkpoints
    page.add(
        "## Post-training against parents and rivals",
        "",
        "GSM8K test, paired on the same questions and pooled over the delta-track seeds "
        f"({', '.join(map(str, params.delta_track.seeds))}): the seed-level interval covers "
        "training runs, the question-level one questions only.",
        "",
    )
    header = ["condition", "comparison", "treatment", "reference", "difference", "seeds CI",
              "questions CI", "McNemar p", "verdict", "source"]  # fmt: skip
    rows = []
    for cond, comparisons in post.items():
        for name, block in comparisons.items():
            treatment, reference = name.split("_vs_")
            e, n_seeds = block["gsm8k"], block.get("n_seeds", 1)
            row = _seed_row(cond, name, e, n_seeds, f"post_training.{cond}.{name}.gsm8k")
            rows.append([*row[:6], ci(e.get("questions_ci_low"), e.get("questions_ci_high")),
                         cell(e["mcnemar_p"]), *row[6:]])  # fmt: skip
            if declared[treatment].parent == reference:  # vs its own parent
                page.headline[f"post/{cond}/{name}/difference"] = e["difference"]
                if declared[treatment].recipe == "merge":
                    page.headline[f"merge/{cond}/accuracy"] = e[f"{treatment}_accuracy"]
    page.table(header, rows)


def _seed_table(page: Page, params: Any, wanted, metric: str, title: str) -> dict[str, Any]:
    """The post-training comparisons (by name, `wanted`) that hold `metric`, over the seeds, as a
    table under `title`; returns the entries shown, by `<cond>/<name>`."""
    rows, shown = [], {}
    for cond, comparisons in _post_training(page, params).items():
        for name, block in comparisons.items():
            if wanted(name) and metric in block:
                e = shown[f"{cond}/{name}"] = block[metric]
                n_seeds = e.get("n_seeds", block.get("n_seeds", 1))
                rows.append(
                    _seed_row(cond, name, e, n_seeds, f"post_training.{cond}.{name}.{metric}")
                )
    if rows:
        page.add(title, "")
        page.table(SEED_HEADER, rows)
    return shown


def _members(params: Any) -> list[tuple[str, int, str]]:
    return [
        (cond, seed, f"{cond}-{seed}")
        for cond in params.delta_track.conditions
        for seed in params.delta_track.seeds
    ]


def _behavior_section(page: Page, params: Any) -> None:
    found = [(m, page.load(f"metrics/behavior/{m}.json")) for *_, m in _members(params)]
    found = [(m, b) for m, b in found if b]
    if not found:
        return
    page.add("## Greedy accuracy and pass@k", "")
    for member, block in found:
        rows = []
        for model, stats in block["models"].items():
            passk = stats.get("pass_at_k", {})
            rows.append([
                model, cell(stats.get("greedy", {}).get("accuracy")),
                *[cell(passk.get(k)) for k in PASS_AT],
                cell(stats.get("diversity", {}).get("distinct_answers")),
                f"`metrics/behavior/{member}.json` › `models.{model}`",
            ])  # fmt: skip
        page.add(f"{member}: {block.get('questions', '?')} questions × "
                 f"{block.get('samples', '?')} samples (one seed per member).", "")  # fmt: skip
        page.table(["model", "greedy", "pass@1", "pass@2", "pass@4", "pass@8",
                    "distinct answers", "source"], rows)  # fmt: skip
        page.figure(Path(f"reports/behavior/{member}/passk.png"), f"pass@k, {member}")


VERDICT_WORDS = {1.0: "holds", 0.5: "partly", 0.0: "does not hold"}


def _deltas_section(page: Page, params: Any) -> None:
    found = [(m, page.load(f"metrics/deltas/{m}.json")) for *_, m in _members(params)]
    found = [(m, d) for m, d in found if d]
    if not found:
        return
    page.add(
        "## How post-training moves the weights, against the published numbers",
        "",
        "Each claim's verdict band lives in `deltalab.deltas.claims`; the full analysis is "
        "each member's `reports/deltas/<member>/report.md`.",
        "",
    )
    members = [m for m, _ in found]
    claims: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for member, block in found:
        for key, subjects in block.get("claims", {}).items():
            if key in page.claims:
                for subject, entry in subjects.items():
                    claims.setdefault((key, subject), {})[member] = entry
    rows = []
    for (key, subject), by_member in claims.items():
        claim = page.claims[key]
        values = [claim.format(by_member[m]["value"]) if m in by_member else "–" for m in members]
        words = [
            VERDICT_WORDS.get(by_member[m]["verdict"], "n/a") for m in members if m in by_member
        ]
        if len(members) == 1:
            word = words[0]
        elif len(set(words)) == 1:  # one training run per delta and seed: judged in each
            word = f"{words[0]} in {'both' if len(words) == 2 else f'all {len(words)}'} seeds"
        else:
            counts = Counter(words)
            word = ", ".join(f"{w} in {counts[w]}" for w in counts) + f" of {len(words)} seeds"
        sources = ", ".join(
            f"`metrics/deltas/{m}.json` › `claims.{key}.{subject}`" for m in by_member
        )
        rows.append([claim.text, claim.published, subject, *values, word, sources])
    page.add(
        "One training run per delta and seed: a claim is judged in each seed, and holds only "
        "where it holds in every one."
        if len(members) > 1
        else f"{members[0]} (one training run per delta: these are not seed-level findings):",
        "",
    )
    page.table(["claim", "published", "delta", *members, "verdict", "source"], rows)
    for member in members:
        page.figure(Path(f"reports/deltas/{member}/methods.png"), f"deltas by method, {member}")


def _merge_section(page: Page, params: Any) -> None:
    found = []
    for *_, member in _members(params):
        search = page.load(f"metrics/search/{member}.json")
        merge = page.load(f"metrics/merge/{member}.json")
        if search or merge:
            found.append((member, search, merge))
    if not found:
        return
    page.add("## The merge search (DoTS) and the merged model", "")
    merges = {n for n, spec in params.study.checkpoints.items() if spec.recipe == "merge"}
    pooled = _seed_table(
        page, params, lambda name: name.split("_vs_")[0] in merges, "gsm8k",
        "The merged model against the models it merges, GSM8K over the delta-track seeds:",
    )  # fmt: skip
    references = (page.load("metrics/compare.json") or {}).get("merge_references", {})
    rows = [
        _seed_row(cond, name, e, e["n_seeds"], f"merge_references.{cond}.{name}")
        for cond, block in references.items()
        for name, e in block.items()
        if name != "best_single"
    ]
    if rows:
        page.add("The merge stage's reference merges against the better single model, GSM8K over "
                 "the delta-track seeds (one accuracy per merge and seed):", "")  # fmt: skip
        page.table(SEED_HEADER, rows)
    for member, search, merge in found:
        if search:
            chosen = search["chosen"]
            page.add(
                f"{member}: {search['trials']} trials on {search['queries']} queries, Pareto front "
                f"of {search['pareto_size']}; chosen ({search['select']}) scale_sft "
                f"{chosen['scale_sft']:.3f}, scale_rlvr {chosen['scale_rlvr']:.3f}: consistency "
                f"{chosen['consistency']:.3f}, prompt perplexity {chosen['perplexity']:.3g} "
                f"(`metrics/search/{member}.json` › `chosen`).",
                "",
            )
            page.figure(Path(f"reports/search/{member}/search.png"), f"search trials, {member}")
        best = merge and merge["best_single"]
        if merge and pooled and not page.per_seed:
            page.add(
                f"{member}: merged {cell(merge['accuracy']['merged'])}, {best} "
                f"{cell(merge['accuracy'][best])} (`metrics/merge/{member}.json` › `accuracy`; "
                "every merge of the seed: `reports/index.md`).",
                "",
            )
        elif merge:
            rows = []
            for name, acc in merge["accuracy"].items():
                vs = merge.get("vs_best_single", {}).get(name)
                rows.append([
                    name, cell(acc),
                    "–" if vs is None else f"{vs['difference']:+.3f}",
                    "–" if vs is None else ci(vs["questions_ci_low"], vs["questions_ci_high"]),
                    "–" if vs is None else cell(vs["mcnemar_p"]),
                    f"`metrics/merge/{member}.json` › `accuracy.{name}`",
                ])  # fmt: skip
                if name == "merged" and not pooled:
                    page.headline[f"merge/{member}/accuracy"] = acc
                    page.headline[f"merge/{member}/vs_{best}"] = vs and vs["difference"]
            page.add(f"GSM8K of the merges against the better single model ({best}); "
                     f"{merge['interval']}:", "")  # fmt: skip
            page.table(["model", "accuracy", f"vs {best}", "questions CI", "McNemar p", "source"],
                       rows)  # fmt: skip


def _masks_section(page: Page, params: Any) -> None:
    found = []
    for *_, member in _members(params):
        masks = page.load(f"metrics/masks/{member}.json")
        masked = page.load(f"metrics/masked_dpo/{member}.json")
        if masks or masked:
            found.append((member, masks, masked))
    if not found:
        return
    page.add("## Weight-delta masks and masked DPO", "")
    pooled = _seed_table(
        page, params, lambda name: True, "reward_accuracy",
        "Validation reward accuracy of the masked runs against their rivals, over the "
        "delta-track seeds (one number per run):",
    )  # fmt: skip
    for key, e in pooled.items():  # each run's mean over the seeds
        cond, name = key.split("/")
        for run in name.split("_vs_"):
            page.headline[f"masked_dpo/{cond}/{run}/reward_accuracy"] = e[f"{run}_accuracy"]
    if pooled and not page.per_seed:  # the README: each seed's overlaps side by side
        _masks_by_seed(page, found)
        return
    for member, masks, masked in found:
        if masks:
            rows = [
                [
                    pair,
                    cell(j["pooled"]),
                    cell(j["random"]),
                    cell(j["per_tensor_mean"]),
                    f"`metrics/masks/{member}.json` › `jaccard.{pair}`",
                ]
                for pair, j in masks["jaccard"].items()
            ]
            page.add(
                f"{member}: masks at density {masks['density']:.0%} ({masks['selection']} "
                "selection); Jaccard against random masks:",
                "",
            )
            page.table(["masks", "Jaccard", "random", "per-tensor mean", "source"], rows)
        if masked:
            rows = []
            for name, run in masked.items():
                rows.append([
                    name, run.get("mask") or "full DPO", cell(run["val_reward_accuracy"]),
                    cell(run.get("frozen_changed")),
                    f"`metrics/masked_dpo/{member}.json` › `{name}`",
                ])  # fmt: skip
                if not pooled:
                    page.headline[f"masked_dpo/{member}/{name}/reward_accuracy"] = run[
                        "val_reward_accuracy"
                    ]
            page.table(["run", "mask", "validation reward accuracy", "frozen entries changed",
                        "source"], rows)  # fmt: skip
        page.figure(Path(f"reports/masks/{member}/jaccard_layers.png"), f"mask overlap, {member}")


def _masks_by_seed(page: Page, found: Sequence[tuple[str, Any, Any]]) -> None:
    by_member = {m: masks for m, masks, _ in found if masks}
    members = list(by_member)
    if members:
        first = by_member[members[0]]
        rows = [
            [pair, *[cell(by_member[m]["jaccard"][pair]["pooled"]) for m in members],
             cell(first["jaccard"][pair]["random"]),
             ", ".join(f"`metrics/masks/{m}.json` › `jaccard.{pair}`" for m in members)]
            for pair in first["jaccard"]
        ]  # fmt: skip
        page.add(f"Masks at density {first['density']:.0%} ({first['selection']} selection): "
                 "Jaccard per seed, against random masks:", "")  # fmt: skip
        page.table(["masks", *members, "random", "source"], rows)
    changed = [
        f"{sum(r.get('frozen_changed') or 0 for r in masked.values())} "
        f"(`metrics/masked_dpo/{m}.json`)"
        for m, _, masked in found
        if masked
    ]
    if changed:
        page.add(f"Frozen entries changed by the masked runs, per seed: {', '.join(changed)}.", "")


SECTIONS = {
    "conditions": _conditions_section,
    "post_training": _post_training_section,
    "behavior": _behavior_section,
    "deltas": _deltas_section,
    "merge": _merge_section,
    "masks": _masks_section,
}


def build(params: Any, root: Path, claims: Mapping[str, Any], profile: str = "params.yaml") -> Page:
    """The report page of the study in `root` (a repository checkout with its metrics);
    `claims`: the published claims the delta analysis judged, by key."""
    page = Page(Path(root), claims=claims)
    page.add(
        "# The study on one page",
        "",
        "Generated by the `report` stage from `metrics/` (nothing here is typed by hand). A "
        "difference is a **finding** only when its seed-level interval (over training runs) "
        "excludes 0; a question-level interval holds the trained models fixed, so one seed is "
        "never a finding, whatever its p-value.",
        "",
    )
    _run_section(page, params, profile)
    for section in SECTIONS.values():
        section(page, params)
    return page


def section(params: Any, root: Path, claims: Mapping[str, Any], name: str, level: int = 4) -> str:
    """One section of the report as README text: its heading at `level`, no figures."""
    page = Page(Path(root), embed_figures=False, per_seed=False, claims=claims)
    SECTIONS[name](page, params)
    lines = ["#" * level + line[2:] if line.startswith("## ") else line for line in page.lines]
    return "\n".join(lines).strip() + "\n"


def markdown(page: Page) -> str:
    return "\n".join(page.lines).rstrip() + "\n"


def html(page: Page) -> str:
    """A self-contained HTML rendering: figures inlined as data URIs, no external resource."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown(page))
    for path in page.figures:
        rel = os.path.relpath(path, "reports")
        data = base64.b64encode((page.root / path).read_bytes()).decode()
        body = body.replace(f'src="{rel}"', f'src="data:image/png;base64,{data}"')
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:.9em}"
        "td,th{border:1px solid #ccc;padding:.3em .6em}th{background:#f3f3f3}"
        "img{max-width:100%;height:auto}code{font-size:.85em;word-break:break-all}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>deltalab study report</title><style>{style}</style></head>\n<body>\n"
        f"{body}</body></html>\n"
    )


def headline(page: Page) -> dict[str, float | None]:
    """The numbers a sweep is judged by, rounded for a readable `dvc exp show`."""
    return {
        k: (None if v is None or not math.isfinite(v) else round(float(v), 4))
        for k, v in sorted(page.headline.items())
    }


def figures_missing(page: Page, expected: Iterable[Path]) -> list[Path]:
    return [p for p in expected if p not in page.figures]
