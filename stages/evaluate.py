"""evaluate@<cond>-<seed>-<model>: batched greedy GSM8K test + arithmetic probes of a checkpoint."""

from deltalab import paths, stage
from deltalab.evaluation.scoring import evaluate_checkpoint
from deltalab.models import configure_torch, runtime_dtype


def main(params, cond: str, seed: int, model: str) -> None:
    configure_torch(params.runtime)
    result = evaluate_checkpoint(
        stage.checkpoint(cond, seed, model),
        paths.dataset("gsm8k", "test"),
        paths.PROBES if params.evaluate.probes else None,
        paths.eval_metrics(cond, seed, model),
        paths.predictions(cond, seed, model),
        params.evaluate,
        device=params.runtime.device,
        dtype=runtime_dtype(params.runtime),
        trust_remote_code=params.runtime.trust_remote_code,
        engine=params.runtime.engine,
    )
    gsm8k, probes = (
        result.metrics["gsm8k"],
        result.metrics.get("probes", {"accuracy": float("nan")}),
    )
    print(
        f"{cond}/seed{seed}/{model}: gsm8k {gsm8k['accuracy']:.3f} "
        f"(stop rate {gsm8k['stop_rate']:.2f}), probes {probes['accuracy']:.3f}"
    )


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int, model=str)
