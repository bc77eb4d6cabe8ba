"""RLVR: GRPO with TRL's `GRPOTrainer` and a verifiable reward.

The reward is 1 when the answer extracted from the completion (by the same
`deltalab.evaluation.answers.extract_answer` that scores evaluation) equals the gold number, else
0: no partial credit, nothing read from the model's own claims.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from deltalab.data import read_jsonl
from deltalab.errors import DataError
from deltalab.evaluation.answers import answers_match, extract_answer, normalize_number
from deltalab.evaluation.generation import generate_greedy
from deltalab.evaluation.prompts import format_prompt
from deltalab.evaluation.stats import discordant_counts, mcnemar_exact
from deltalab.train.params import RLVRParams
from deltalab.train.recipe import TrainingRun


def load_rlvr_rows(path: str | os.PathLike) -> list[dict]:
    """`{prompt, answer}` rows; an empty prompt or a gold answer that is not a number is an error
    naming the file and row. `answer` comes back normalized (`"1,200"` -> `"1200"`)."""
    rows = read_jsonl(path, ("prompt", "answer"))
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise DataError(f"{path}: row {i}: field 'prompt' must be a non-empty string")
        gold = normalize_number(str(row["answer"]))
        if gold is None:
            raise DataError(f"{path}: row {i}: gold answer {row['answer']!r} is not a number")
        out.append({"prompt": row["prompt"], "answer": gold})
    return out


def verifiable_reward(completions: Sequence[str], answer: Sequence[str], **_) -> list[float]:
    """1.0 where the extracted answer equals the gold number, else 0.0 (TRL reward signature)."""
    return [
        float(answers_match(extract_answer(text), gold))
        for text, gold in zip(completions, answer, strict=True)
    ]


class RewardGuard(TrainerCallback):
    """Stops the run with a clear error when a logged reward is NaN (no silent garbage)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        reward = (logs or {}).get("reward")
        if reward is not None and not math.isfinite(reward):
            raise DataError(f"step {state.global_step}: the mean reward is {reward}")


def rlvr_dataset(rows: Sequence[dict], tokenizer: PreTrainedTokenizerBase) -> Dataset:
    return Dataset.from_list(
        [{"prompt": format_prompt(tokenizer, r["prompt"]), "answer": r["answer"]} for r in rows]
    )


def grpo_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run: TrainingRun,
    cfg: RLVRParams,
    train: Dataset,
    optimizers: tuple = (None, None),
) -> GRPOTrainer:
    """A GRPOTrainer; with `beta > 0` TRL loads the KL reference from the parent's directory."""
    # runtime.engine: vllm → TRL's own vLLM rollouts, colocated with training on the same GPUs
    vllm = {"use_vllm": True, "vllm_mode": "colocate"} if run.runtime.engine == "vllm" else {}
    config = GRPOConfig(
        **run.trainer_args(cfg),
        num_generations=cfg.num_generations,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_completion_length,
        beta=cfg.beta,
        **vllm,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=verifiable_reward,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[*run.callbacks, RewardGuard()],
        optimizers=optimizers,
    )


def greedy_correct(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict],
    max_new_tokens: int,
    batch_size: int,
) -> list[bool]:
    """Whether the greedy answer to each `{prompt, answer}` row is right (held-out accuracy)."""
    model.eval()
    responses = generate_greedy(
        model,
        tokenizer,
        [format_prompt(tokenizer, r["prompt"]) for r in rows],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return [
        answers_match(extract_answer(g.text), r["answer"])
        for g, r in zip(responses, rows, strict=True)
    ]


def reward_by_fifth(log_history: Sequence[dict], max_steps: int) -> list[float]:
    """Mean logged reward in each fifth of the run's steps (logged values are already means over
    their logging interval, attributed to the step they were logged at)."""
    fifths: list[list[float]] = [[] for _ in range(5)]
    for entry in log_history:
        if "reward" in entry and "step" in entry:
            index = min(4, (entry["step"] - 1) * 5 // max_steps)
            fifths[index].append(entry["reward"])
    return [sum(v) / len(v) if v else float("nan") for v in fifths]


def rlvr_summary(
    log_history: Sequence[dict], max_steps: int, before: Sequence[bool], after: Sequence[bool]
) -> dict[str, float]:
    """What the rlvr stage records: the reward of the first and last fifth of training, and the
    parent's and the trained model's greedy correctness on the held-out prompts, paired."""
    fifths = reward_by_fifth(log_history, max_steps)
    lost, gained = discordant_counts(before, after)
    return {
        "reward/first_fifth": fifths[0],
        "reward/last_fifth": fifths[-1],
        "reward/gain": fifths[-1] - fifths[0],
        "heldout/prompts": len(before),
        "heldout/parent_accuracy": sum(before) / len(before),
        "heldout/accuracy": sum(after) / len(after),
        "heldout/gained": gained,
        "heldout/lost": lost,
        "heldout/mcnemar_p": mcnemar_exact(lost, gained),
    }
