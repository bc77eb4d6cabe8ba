"""Render dvc.yaml from the study a params file declares (`study:`), and check it is in sync.

DVC cannot look a parent up by name inside a `matrix`, so the lineage is not written in dvc.yaml
by hand: each checkpoint the study trains gets a stage of its own, named after it, whose deps are
its declared parent and its recipe's data; the analysis stages depend on exactly the checkpoints
the declaration names for them. Matrix axes stay DVC templates (`${conditions}`, `${seeds}`,
`${delta_track.*}`, `${study.evaluate}`), so `dvc exp run -S seeds=[0]` needs no re-render; a
change to `study:` itself does (the test suite fails until dvc.yaml is rendered again).

    python tools/render_pipeline.py --write          # params.yaml -> dvc.yaml
    python tools/render_pipeline.py --check          # exit 1 when dvc.yaml is stale
    python tools/render_pipeline.py --params configs/micro.yaml --check

Code deps are the import closure of each stage script (tools/dvc_deps.py); data, model and params
deps come from the recipe. Nothing here names a checkpoint or a condition: they come from the
params file.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dvc_deps

from deltalab.config import Params, load_params
from deltalab.schema.study import TRAINED, StudyParams

ROOT = Path(__file__).resolve().parents[1]
RUN = "PYTHONPATH=src python"
HEADER = """\
# The whole study, stage by stage (`dvc dag`). Names and paths are contracts (see DESIGN.md).
# Rendered from params.yaml's `study:` by `python tools/render_pipeline.py --write`: edit the
# declaration, not this file (tests/test_pipeline_contracts.py checks they agree).
# Stage commands put the checkout's own src/ first on the path: a queued experiment (its own copy
# of the repository) runs its own code, not whatever the workspace holds when it starts.
"""

MEMBER = "${item.cond}/seed${item.seed}"  # models/<cond>/seed<seed>/...
LABEL = "${item.cond}-${item.seed}"  # metrics/<stage>/<cond>-<seed>.json
ARGS = "--cond ${item.cond} --seed ${item.seed}"
MATRIX = {
    "all": {"cond": "${conditions}", "seed": "${seeds}"},
    "delta_track": {"cond": "${delta_track.conditions}", "seed": "${delta_track.seeds}"},
}
NO_CACHE = {"cache": False}
# what every search trial merges with (search.method_ranges searches some of these)
TRIAL_METHOD = [f"merge.{k}" for k in ("method", "density", "gamma", "epsilon", "normalize",
                                         "method_seed")]  # fmt: skip

# Per recipe: its data deps, the params sections it reads, and what its loss plot is called.
RECIPE_DATA = {
    "pretrain": ["models/tokenizer", "data/prepared/corpus"],
    "sft_tulu": ["data/prepared/tulu"],
    "sft_gsm8k": ["data/prepared/gsm8k", "data/prepared/tulu"],
    "dpo": ["data/prepared/prefs"],
    "rlvr": ["data/prepared/rlvr"],
}
RECIPE_PARAMS = {"pretrain": ["model", "pretrain"]}
REWRITES_TEXT = {"pretrain", "sft_tulu", "sft_gsm8k", "dpo"}  # GRPO's prompts stay as they are
# The DPO settings the Fisher masks reuse: the masks' run's own pairs, beta and length.
DPO_KEYS_OF_MASKS = ("val_fraction", "max_train_samples", "beta", "max_length")
LOSS_TITLE = {"pretrain": "Pretraining", "sft_tulu": "Tulu SFT", "sft_gsm8k": "GSM8K SFT"}


def model(name: str) -> str:
    return f"models/{MEMBER}/{name}"


def train_logs(name: str) -> tuple[dict, dict]:
    """(metrics entry, plots entry) of a training stage's dvclive directory."""
    logs = f"metrics/train/{name}/{LABEL}"
    return {f"{logs}/metrics.json": NO_CACHE}, {f"{logs}/plots": NO_CACHE}


def stage(cmd: str, deps: list[str], params: list[Any], outs: list[Any], **extra: Any) -> dict:
    body: dict[str, Any] = {"cmd": f"{RUN} {cmd}", "deps": deps, "params": params, "outs": outs}
    return body | {k: v for k, v in extra.items() if v}


def import_stage(params: Params, name: str) -> dict:
    spec = params.study.checkpoints[name]
    return {
        "matrix": MATRIX[spec.matrix],
        **stage(
            f"stages/import.py --checkpoint {name} {ARGS}",
            [],
            ["runtime.trust_remote_code", f"study.checkpoints.{name}"],
            [model(name)],
        ),
    }


def checkpoint_stage(params: Params, name: str) -> dict:
    """The stage that makes a declared checkpoint: its import, or its training run."""
    if params.study.checkpoints[name].recipe == "import":
        return import_stage(params, name)
    return training_stage(params, name)


def training_stage(params: Params, name: str) -> dict:
    spec = params.study.checkpoints[name]
    metrics, plots = train_logs(name)
    deps = ([model(spec.parent)] if spec.parent else []) + RECIPE_DATA[spec.recipe]
    outs = [model(name)]
    if spec.recipe == "dpo":  # the final Adam moments, for the momentum masks
        outs.append(f"models/{MEMBER}/{name}_exp_avg.safetensors")
    reads = RECIPE_PARAMS.get(spec.recipe, [spec.recipe])
    study_keys = [f"study.checkpoints.{name}"]
    if spec.recipe in REWRITES_TEXT:
        study_keys.append("study.transforms")
    return {
        "matrix": MATRIX[spec.matrix],
        **stage(
            f"stages/{spec.recipe}.py --checkpoint {name} {ARGS}",
            deps,
            [*reads, "runtime", *study_keys],
            outs,
            metrics=[metrics],
            plots=[plots],
        ),
    }


def evaluate_stage(matrix: str, models: str) -> dict:
    return {
        "matrix": MATRIX[matrix] | {"model": models},
        **stage(
            f"stages/evaluate.py {ARGS} --model ${{item.model}}",
            [
                model("${item.model}"),
                "data/prepared/gsm8k/test.jsonl",
                "data/prepared/probes.jsonl",
            ],
            ["evaluate", "runtime"],
            ["reports/predictions/${item.cond}/seed${item.seed}/${item.model}.jsonl"],
            metrics=[{"metrics/eval/${item.cond}/seed${item.seed}/${item.model}.json": NO_CACHE}],
        ),
    }


def member_stage(script: str, deps: list[str], params: list[Any], outs: list[Any], **kw) -> dict:
    return {
        "matrix": MATRIX["delta_track"],
        **stage(f"stages/{script}.py {ARGS}", deps, params, outs, **kw),
    }


def render_stages(params: Params) -> dict[str, dict]:
    """dvc.yaml's `stages:` for the declared study, without code deps."""
    study = params.study
    # one stage per imported or trained checkpoint (masked DPO and the merge share theirs)
    own = [n for n, s in study.checkpoints.items() if s.recipe in (*TRAINED, "import")]
    main_track = [n for n in own if study.checkpoints[n].matrix == "all"]
    track = [n for n in own if study.checkpoints[n].matrix == "delta_track"]
    stages: dict[str, dict] = {
        "prepare_data": stage("stages/prepare_data.py", [], ["data"], ["data/prepared"]),
    }
    if study.made_by("pretrain"):
        stages["build_tokenizer"] = stage(
            "stages/build_tokenizer.py",
            ["data/prepared/corpus"],
            ["tokenizer"],
            ["models/tokenizer"],
        )
    for name in main_track:
        stages[name] = checkpoint_stage(params, name)
    if study.evaluate:
        stages["evaluate"] = evaluate_stage("all", "${study.evaluate}")
    if study.evaluate and study.compare_conditions:
        # per-run numbers compared over seeds: masked DPO's reward accuracy, the merges' GSM8K
        per_run = ["metrics/masked_dpo"] if study.masks_from else []
        per_run += ["metrics/merge"] if study.task_vectors else []
        stages["compare"] = stage(
            "stages/compare.py",
            ["reports/predictions", "metrics/eval", *per_run],
            ["conditions", "seeds", "delta_track", "study.evaluate", "study.evaluate_track",
             "study.rivals", "study.compare_conditions", "study.checkpoints", "study.masks_from",
             "study.task_vectors", "compare"],
            ["reports/evaluation"],
            metrics=[{"metrics/compare.json": NO_CACHE}],
            plots=[
                {"metrics/plots/eval/accuracy.csv": NO_CACHE | {
                    "title": "GSM8K accuracy by stage and condition (mean over seeds)",
                    "template": "bar_horizontal", "x": "gsm8k_accuracy", "y": "label"}},
                {"metrics/plots/eval/probes.csv": NO_CACHE | {
                    "title": "Arithmetic probe accuracy per family",
                    "template": "bar_horizontal", "x": "accuracy", "y": "label"}},
            ],
        )  # fmt: skip
    for name in track:
        stages[name] = checkpoint_stage(params, name)
    if study.evaluate_track:
        stages["evaluate_track"] = evaluate_stage("delta_track", "${study.evaluate_track}")
    if study.behavior:
        stages["behavior"] = member_stage(
            "behavior",
            [*map(model, study.behavior.models), "data/prepared/gsm8k/test.jsonl"],
            ["behavior", "runtime", "study.behavior"],
            [f"reports/behavior/{LABEL}"],
            metrics=[{f"metrics/behavior/{LABEL}.json": NO_CACHE}],
            plots=[{f"metrics/plots/behavior/{LABEL}/passk.csv": NO_CACHE | {
                "title": "pass@k of the post-trained models",
                "template": "linear", "x": "k", "y": "pass_at_k"}}],
        )  # fmt: skip
    if study.deltas:
        names = dict.fromkeys(n for pair in study.deltas for n in pair)
        stages["analyze_deltas"] = member_stage(
            "analyze_deltas",
            [model(n) for n in _lineage_order(study, names)],
            ["analyze_deltas", "runtime", "study.deltas", "study.contrast", "study.checkpoints"],
            [f"reports/deltas/{LABEL}"],
            metrics=[{f"metrics/deltas/{LABEL}.json": NO_CACHE}],
        )
    if study.task_vectors:
        stages |= dots_stages(params)
    if study.masks_from:
        stages |= mask_stages(params)
    stages["report"] = report_stage(stages)
    return stages


# What the report reads: metrics families and the folders of the figures it embeds.
REPORTED = ("metrics/compare.json", "metrics/behavior", "metrics/deltas", "metrics/search",
            "metrics/merge", "metrics/masks", "metrics/masked_dpo", "reports/evaluation",
            "reports/behavior", "reports/deltas", "reports/search", "reports/masks")  # fmt: skip


def report_stage(stages: dict[str, dict]) -> dict:
    """After every other stage: the families of metrics and figures the study produces (whole
    folders, so every matrix member's files are deps whatever `delta_track` holds)."""
    produced = set()
    for body in stages.values():
        for entry in [*body.get("outs", []), *body.get("metrics", [])]:
            path = entry if isinstance(entry, str) else next(iter(entry))
            produced |= {r for r in REPORTED if path == r or path.startswith(r + "/")}
    return stage(
        "stages/report.py",
        [r for r in REPORTED if r in produced],
        ["conditions", "seeds", "delta_track", "study", "data.source", "evaluate.gsm8k_limit"],
        ["reports/index.md", "reports/index.html"],
        metrics=[{"metrics/headline.json": NO_CACHE}],
    )


def _lineage_order(study: StudyParams, names: Iterable[str]) -> list[str]:
    """Names in declaration order (parents before children)."""
    wanted = set(names)
    return [n for n in study.checkpoints if n in wanted]


def dots_stages(params: Params) -> dict[str, dict]:
    study = params.study
    triple = study.task_vectors
    base, sources = triple.base, [triple.sft, triple.rlvr]
    vectors = f"vectors/{MEMBER}"
    search_data = f"data/search/{MEMBER}"
    out = {
        "task_vectors": member_stage(
            "task_vectors",
            [model(base), *map(model, sources)],
            ["task_vectors", "runtime", "study.task_vectors"],
            [vectors],
            metrics=[{f"metrics/vectors/{LABEL}.json": NO_CACHE}],
        ),
        "difficulty": member_stage(
            "difficulty",
            [model(base), vectors, "data/prepared/search/pool.jsonl"],
            ["difficulty", "runtime", "study.task_vectors"],
            [f"{search_data}/difficulty.parquet"],
            metrics=[{f"metrics/difficulty/{LABEL}.json": NO_CACHE}],
        ),
        "sample_queries": member_stage(
            "sample_queries",
            [f"{search_data}/difficulty.parquet"],
            ["sample_queries"],
            [f"{search_data}/queries.parquet"],
        ),
        "search": member_stage(
            "search",
            [model(base), vectors, f"{search_data}/queries.parquet"],
            ["search", "runtime", "study.task_vectors", *TRIAL_METHOD],
            [f"reports/search/{LABEL}"],
            metrics=[{f"metrics/search/{LABEL}.json": NO_CACHE}],
            plots=[
                {
                    f"metrics/plots/search/{LABEL}/trials.csv": NO_CACHE
                    | {
                        "title": "Merge search trials (consistency up, prompt perplexity down)",
                        "template": "scatter",
                        "x": "perplexity",
                        "y": "consistency",
                    }
                },
                {
                    f"metrics/plots/search/{LABEL}/pareto.csv": NO_CACHE
                    | {
                        "title": "Merge search Pareto front",
                        "template": "linear",
                        "x": "perplexity",
                        "y": "consistency",
                    }
                },
            ],
        ),
    }  # fmt: skip
    for merged in study.made_by("merge"):
        out["merge"] = member_stage(
            "merge",
            [model(base), *map(model, sources), vectors, f"metrics/search/{LABEL}.json",
             *(f"reports/predictions/{MEMBER}/{s}.jsonl" for s in sources),
             "data/prepared/gsm8k/test.jsonl"],
            ["merge", "evaluate.gsm8k_limit", "evaluate.max_new_tokens", "evaluate.batch_size",
             "runtime", "study.task_vectors", f"study.checkpoints.{merged}",
             "task_vectors.top_ratio"],
            [model(merged), f"reports/merge/{LABEL}"],
            metrics=[{f"metrics/merge/{LABEL}.json": NO_CACHE}],
        )  # fmt: skip
    return out


def mask_stages(params: Params) -> dict[str, dict]:
    study = params.study
    run = study.masks_from
    parent, recipe = study.checkpoints[run].parent, study.checkpoints[run].recipe
    out = {
        "masks": member_stage(
            "masks",
            [model(parent), model(run), f"models/{MEMBER}/{run}_exp_avg.safetensors",
             "data/prepared/prefs"],
            ["masks", *(f"{recipe}.{key}" for key in DPO_KEYS_OF_MASKS), "runtime",
             "study.masks_from", f"study.checkpoints.{run}", "study.transforms"],
            [f"masks/{MEMBER}", f"reports/masks/{LABEL}"],
            metrics=[{f"metrics/masks/{LABEL}.json": NO_CACHE}],
        ),
    }  # fmt: skip
    masked = study.made_by("masked_dpo")
    if masked:
        logs = [train_logs(n) for n in masked]
        out["masked_dpo"] = member_stage(
            "masked_dpo",
            [model(parent), f"masks/{MEMBER}", "data/prepared/prefs",
             f"metrics/train/{run}/{LABEL}/metrics.json"],
            ["masked_dpo", "masks.methods", "runtime", "study.masks_from", "study.transforms",
             *(f"study.checkpoints.{n}" for n in masked)],
            [model(n) for n in masked],
            metrics=[{f"metrics/masked_dpo/{LABEL}.json": NO_CACHE}, *(m for m, _ in logs)],
            plots=[p for _, p in logs],
        )  # fmt: skip
    return out


# Per delta-track recipe: the plot's name suffix, its title, and dvclive file → column.
TRACK_CURVES = {
    "dpo": ("rewards", "DPO validation reward accuracy and margin", {
        "eval/rewards/accuracies.tsv": "accuracies", "eval/rewards/margins.tsv": "margins",
        "rewards/accuracies.tsv": "accuracies"}),
    "rlvr": ("reward", "GRPO mean reward, reward spread and KL to the parent", {
        "reward.tsv": "reward", "frac_reward_zero_std.tsv": "frac_reward_zero_std",
        "kl.tsv": "kl"}),
}  # fmt: skip


def render_plots(params: Params) -> list[dict]:
    """Top-level plots: each main-track training stage's loss across the conditions (first seed),
    and the DPO and GRPO curves of the first delta-track member."""
    study, conds = params.study, params.conditions
    first = "${delta_track.conditions[0]}-${delta_track.seeds[0]}"
    plots = []
    for name, spec in study.checkpoints.items():
        logs = f"metrics/train/{name}"
        if spec.matrix == "all" and spec.recipe in LOSS_TITLE:
            series = {f"{logs}/{c}-${{seeds[0]}}/plots/metrics/loss.tsv": "loss" for c in conds}
            series |= {
                f"{logs}/{c}-${{seeds[0]}}/plots/metrics/eval/loss.tsv": "loss" for c in conds
            }
            title = f"{LOSS_TITLE[spec.recipe]} loss: {name} ({' vs '.join(conds)})"
            plots.append(
                {f"{name}_loss": {"title": title, "template": "linear", "x": "step", "y": series}}
            )
        elif spec.matrix == "delta_track" and spec.recipe in TRACK_CURVES:
            suffix, title, columns = TRACK_CURVES[spec.recipe]
            m = f"{logs}/{first}/plots/metrics"
            plots.append({f"{name}_{suffix}": {
                "title": f"{title}: {name} (first delta-track member)",
                "template": "linear", "x": "step",
                "y": {f"{m}/{file}": column for file, column in columns.items()}}})  # fmt: skip
    return plots


def render(params: Params, repo_root: Path = ROOT) -> str:
    """The dvc.yaml text for a validated params file."""
    stages = render_stages(params)
    for body in stages.values():
        script = dvc_deps.stage_script(body["cmd"])
        body["deps"] = dvc_deps.code_deps(script, repo_root) + body["deps"]
    blocks = [HEADER + "stages:\n"]
    for name, body in stages.items():
        blocks.append(_dump({name: body}, indent=1) + "\n")
    plots = render_plots(params)
    if plots:
        blocks.append("plots:\n" + _dump(plots, indent=1))
    return "".join(blocks).rstrip("\n") + "\n"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &anchors: the file is read by people

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # lists indented under their key, as DVC writes them


def _dump(data: Any, indent: int) -> str:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    pad = "  " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml is stale")
    mode.add_argument("--write", action="store_true", help="write dvc.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=None, help="default: dvc.yaml beside --params")
    args = parser.parse_args(argv)
    out = args.out or args.params.resolve().parent / "dvc.yaml"
    text = render(load_params(args.params), ROOT)
    if args.write:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        print(f"{out}: {len(yaml.safe_load(text)['stages'])} stages rendered from {args.params}")
        return 0
    current = out.read_text() if out.is_file() else ""
    if current == text:
        print(f"{out}: in sync with the study of {args.params}")
        return 0
    sys.stderr.writelines(
        difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            str(out), "rendered", n=1,
        )
    )  # fmt: skip
    print(f"{out}: stale (run `python tools/render_pipeline.py --write`)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
