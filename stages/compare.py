"""compare: baseline vs mul_tokens for every evaluated stage — accuracies, difference, paired
bootstrap interval over questions, exact McNemar p-value (pooled over seeds), per-seed rows and
the t-interval over seeds — and, within each delta-track condition, each post-training stage
against its parent (dpo vs sft_gsm8k, rlvr vs sft_tulu) on the same questions; plus the accuracy
figures."""

import json

from deltalab import paths, stage
from deltalab.evaluation.compare import (
    compare_prediction_files,
    compare_stage_files,
    compare_summary,
    write_compare,
)
from deltalab.report.evaluation import accuracy_table, plot_accuracy, write_plot_data


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
    stage_pairs += [(a, b) for a, b in params.study.rivals if a in track and b in track]
    result["post_training"] = compare_stage_files(files, stage_pairs, params.compare)

    metrics = {k: json.loads(paths.eval_metrics(*k).read_text()) for k in keys}
    table = accuracy_table(metrics)
    write_plot_data(table, paths.EVAL_PLOTS, [*models, *track])
    plot_accuracy(table, models, paths.ACCURACY_FIGURE, branches=track)
    write_compare(paths.COMPARE, result)
    print(compare_summary(result, models, conditions))


if __name__ == "__main__":
    stage.run(main)
