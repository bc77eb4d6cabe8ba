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
    write_compare,
)
from deltalab.report.evaluation import accuracy_table, plot_accuracy, write_plot_data

PARENTS = {
    "dpo": "sft_gsm8k",
    "rlvr": "sft_tulu",
    "merged": "sft_tulu",
    "masked_dpo": "sft_gsm8k",
    "masked_dpo_random": "sft_gsm8k",
}
# Delta-track models also compared with each other (reference, treatment), when both are evaluated.
RIVALS = [("dpo", "masked_dpo"), ("masked_dpo_random", "masked_dpo")]


def main(params) -> None:
    models, track = params.evaluate.models, params.evaluate.track_models
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
    result = compare_prediction_files(files, params.compare, skip_unpaired_models=True)
    stage_pairs = [(PARENTS[m], m) for m in track]
    stage_pairs += [(a, b) for a, b in RIVALS if a in track and b in track]
    result["post_training"] = compare_stage_files(files, stage_pairs, params.compare)

    metrics = {k: json.loads(paths.eval_metrics(*k).read_text()) for k in keys}
    table = accuracy_table(metrics)
    write_plot_data(table, paths.EVAL_PLOTS, [*models, *track])
    plot_accuracy(table, models, paths.REPORTS / "evaluation" / "accuracy.png", branches=track)
    write_compare(paths.COMPARE, result)
    for model in models:
        g, n_seeds = result[model]["gsm8k"], result[model]["n_seeds"]
        seeds = (
            f"seeds [{g['seeds_ci_low']:+.3f}, {g['seeds_ci_high']:+.3f}] (sd {g['seeds_sd']:.3f})"
            if n_seeds > 1
            else "one seed: training-run variance unmeasured"
        )
        print(
            f"{model} ({n_seeds} seeds): baseline {g['baseline_accuracy']:.3f} vs mul_tokens "
            f"{g['mul_tokens_accuracy']:.3f}, diff {g['difference']:+.3f}, questions "
            f"[{g['questions_ci_low']:+.3f}, {g['questions_ci_high']:+.3f}], {seeds}, "
            f"McNemar p={g['mcnemar_p']:.3g}"
        )
    for cond, comparisons in result["post_training"].items():
        for name, entry in comparisons.items():
            g = entry["gsm8k"]
            print(
                f"{cond} {name}: GSM8K diff {g['difference']:+.3f}, questions "
                f"[{g['questions_ci_low']:+.3f}, {g['questions_ci_high']:+.3f}], "
                f"McNemar p={g['mcnemar_p']:.3g}"
            )


if __name__ == "__main__":
    stage.run(main)
