"""behavior@<cond>-<seed>: greedy accuracy, pass@k, diversity, confidence and length of the
post-trained checkpoints on the same GSM8K test questions, with paired comparisons."""

from deltalab import paths, stage
from deltalab.errors import CheckpointError
from deltalab.evaluation.behavior import run_behavior
from deltalab.evaluation.params import BehaviorParams
from deltalab.evaluation.scoring import load_gsm8k
from deltalab.models import configure_torch, runtime_dtype
from deltalab.report.behavior import write_behavior


def main(params, cond: str, seed: int) -> None:
    configure_torch(params.runtime)
    plan = params.study.behavior
    p = BehaviorParams(
        **params.behavior.model_dump(), models=plan.models, pairs=[list(x) for x in plan.pairs]
    )
    checkpoints = {model: stage.checkpoint(cond, seed, model) for model in p.models}
    for model, path in checkpoints.items():  # fail before any model is loaded
        if not (path / "config.json").is_file():
            what = "no config.json" if path.is_dir() else "checkpoint directory not found"
            raise CheckpointError(
                f"{path}: {what} (behavior reads {', '.join(p.models)}; "
                f"run `dvc repro {model}@{cond}-{seed}`?)"
            )
    rows = load_gsm8k(paths.dataset("gsm8k", "test"), limit=p.questions)
    result = run_behavior(
        checkpoints,
        rows,
        p,
        device=params.runtime.device,
        dtype=runtime_dtype(params.runtime),
        trust_remote_code=params.runtime.trust_remote_code,
        engine=params.runtime.engine,
    )
    write_behavior(
        result.metrics,
        result.records,
        p.models,
        metrics_path=paths.behavior_metrics(cond, seed),
        plot_csv=paths.member_plots("behavior", cond, seed) / "passk.csv",
        report_dir=paths.member_report("behavior", cond, seed),
        title=f"{cond}, seed {seed} (temperature {p.temperature}, top-p {p.top_p})",
    )
    n = p.samples
    for model in p.models:
        m = result.metrics["models"][model]
        print(
            f"{cond}/seed{seed}/{model}: greedy {m['greedy']['accuracy']:.3f}, "
            f"pass@1 {m['pass_at_k']['k1']:.3f}, pass@{n} {m['pass_at_k'][f'k{n}']:.3f}, "
            f"distinct answers {m['diversity']['distinct_answers']:.2f}"
        )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
