"""compare: baseline vs mul_tokens for every evaluated stage — accuracies, difference, paired
bootstrap interval over questions, exact McNemar p-value (pooled over seeds), per-seed rows and
the t-interval over seeds — and, within each delta-track condition, each post-training stage
against its parent (dpo vs sft_gsm8k, rlvr vs sft_tulu) and its rivals on the same questions, with
the masked DPO runs' validation reward accuracy against their rivals and the merge stage's
reference merges against the better single model over the seeds; plus the accuracy figures."""

import json

from deltalab import paths, stage
from deltalab.evaluation.compare import (
    compare_merge_references,
    compare_prediction_files,
    compare_run_metrics,
    compare_stage_files,
    compare_summary,
    write_compare,
)
from deltalab.report.evaluation import accuracy_table, plot_accuracy, write_plot_data


def per_seed(params, stage_name: str, cond: str) -> dict[int, dict]:
    """metrics/<stage>/<cond>-<seed>.json of every delta-track seed."""
    return {
        s: json.loads(paths.dots_metrics(stage_name, cond, s).read_text())
        for s in params.delta_track.seeds
    }


def add_reward_accuracy(post_training: dict, stage_pairs, params) -> None:
    """The masked DPO runs' validation reward accuracy against their rivals, over the seeds."""
    for cond in params.delta_track.conditions:
        runs = per_seed(params, "masked_dpo", cond)
        confidence = params.compare.confidence
        found = compare_run_metrics(runs, stage_pairs, "val_reward_accuracy", confidence=confidence)
        for name, entry in found.items():
            post_training.setdefault(cond, {}).setdefault(name, {})["reward_accuracy"] = entry


def merge_references(params) -> dict:
    """The merge stage's reference merges against the better single model, over the seeds."""
    declared, confidence = set(params.study.checkpoints), params.compare.confidence
    return {
        cond: compare_merge_references(
            per_seed(params, "merge", cond), declared, confidence=confidence
        )
        for cond in params.delta_track.conditions
    }


def main(params) -> None:
    models, track = params.study.evaluate, params.study.evaluate_track
    keys = [(c, s, m) for c in params.conditions for s in params.seeds for m in models]
    keys += [
        (c, s, m)
        for c in params.delta_track.conditions
        for s in params.delta_track.seeds
        for m in track
    ]
    files = {k: paths.predictions(*k) for k in keys}
    # The delta-track models exist for delta_track.conditions only: compared across conditions
    # where both have them, and against their parents within each condition.
    conditions = params.study.compare_conditions
    result = compare_prediction_files(files, params.compare, conditions, skip_unpaired_models=True)
    stage_pairs = [(params.study.checkpoints[m].parent, m) for m in track]
    # rivals: both evaluated, at least one on the delta track (e.g. merged vs sft_gsm8k)
    evaluated = {*models, *track}
    stage_pairs += [
        (a, b) for a, b in params.study.rivals if {a, b} <= evaluated and {a, b} & set(track)
    ]
    result["post_training"] = compare_stage_files(files, stage_pairs, params.compare)
    if params.study.masks_from:
        add_reward_accuracy(result["post_training"], stage_pairs, params)
    if params.study.task_vectors:
        result["merge_references"] = merge_references(params)

    metrics = {k: json.loads(paths.eval_metrics(*k).read_text()) for k in keys}
    table = accuracy_table(metrics)
    write_plot_data(table, paths.EVAL_PLOTS, [*models, *track])
    plot_accuracy(table, models, paths.ACCURACY_FIGURE, branches=track)
    write_compare(paths.COMPARE, result)
    print(compare_summary(result, models, conditions))


if __name__ == "__main__":
    stage.run(main)
