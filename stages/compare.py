"""compare: baseline vs mul_tokens for every evaluated stage — accuracies, difference, paired
bootstrap CI and exact McNemar p-value (pooled over seeds, plus per-seed rows) — and figures."""

import json

from deltalab import paths, stage
from deltalab.evaluation.compare import compare_prediction_files, write_compare
from deltalab.report.evaluation import accuracy_table, plot_accuracy, write_plot_data


def main(params) -> None:
    models = params.evaluate.models
    keys = [(c, s, m) for c in params.conditions for s in params.seeds for m in models]
    result = compare_prediction_files({k: paths.predictions(*k) for k in keys}, params.compare)
    metrics = {k: json.loads(paths.eval_metrics(*k).read_text()) for k in keys}
    table = accuracy_table(metrics)
    write_plot_data(table, paths.EVAL_PLOTS, models)
    plot_accuracy(table, models, paths.REPORTS / "evaluation" / "accuracy.png")
    write_compare(paths.COMPARE, result)
    for model in models:
        g = result[model]["gsm8k"]
        print(
            f"{model}: baseline {g['baseline_accuracy']:.3f} vs mul_tokens "
            f"{g['mul_tokens_accuracy']:.3f}, diff {g['difference']:+.3f} "
            f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}], McNemar p={g['mcnemar_p']:.3g}"
        )


if __name__ == "__main__":
    stage.run(main)
