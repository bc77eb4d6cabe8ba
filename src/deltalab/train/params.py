"""Sections of the training stages: `pretrain`, `sft_tulu`, `sft_gsm8k`, `dpo`, `masked_dpo`,
`rlvr` (shared hyperparameters in `TrainParams`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from deltalab.schema.base import LearningRate, PositiveInt, Ratio, Section


class TrainParams(Section):
    """Hyperparameters shared by every training stage."""

    max_steps: PositiveInt = 300
    batch_size: PositiveInt = 16
    gradient_accumulation_steps: PositiveInt = 1
    learning_rate: LearningRate = 1.0e-3
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: Ratio = 0.05
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 1.0
    eval_steps: PositiveInt | None = 50  # None: no periodic evaluation
    logging_steps: PositiveInt = 10


class SequenceTrainParams(TrainParams):
    """Stages that train on whole token sequences of at most `max_length` tokens."""

    max_length: PositiveInt = 256


class PretrainParams(SequenceTrainParams):
    """GPT-2 from scratch on the corpus (an existing checkpoint is the `import` recipe)."""


class SFTParams(SequenceTrainParams):
    learning_rate: LearningRate = 5.0e-4
    max_train_samples: PositiveInt | None = None


class SFTGsm8kParams(SFTParams):
    # Share of stage-1 (Tulu) conversations mixed into GSM8K SFT, relative to the GSM8K rows:
    # replay keeps general instruction following from being overwritten by one answer format.
    replay_tulu_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Share of the train split held out for validation (the test split stays unseen).
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.05
    stop_eval_questions: PositiveInt = 100
    stop_eval_max_new_tokens: PositiveInt = 128
    stop_eval_batch_size: PositiveInt = 32


class DPOParams(SequenceTrainParams):
    """DPO from sft_gsm8k on the preference pairs; the reference model is the frozen parent."""

    learning_rate: LearningRate = 5.0e-5
    beta: Annotated[float, Field(gt=0.0)] = 0.1
    loss_type: Literal["sigmoid", "sigmoid_norm", "ipo", "hinge", "robust"] = "sigmoid"
    # Weight of an added NLL loss on the chosen responses (RPO); 0 is plain DPO. Keeps the chosen
    # likelihood from falling along with the rejected one.
    sft_loss_weight: Annotated[float, Field(ge=0.0)] = 0.0
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.1
    max_train_samples: PositiveInt | None = None


class MaskedDPOParams(DPOParams):
    """DPO that updates only the entries of one mask (masked AdamW), from the parent of the
    masks' DPO run; each masked checkpoint's mask is declared in `study.checkpoints`."""


class RLVRParams(TrainParams):
    """GRPO from sft_tulu with a verifiable reward (extracted answer == gold number).

    `batch_size` counts completions per step: `batch_size / num_generations` prompts per step.
    """

    learning_rate: LearningRate = 1.0e-4
    num_generations: Annotated[int, Field(ge=2)] = 16
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 0.8
    max_completion_length: PositiveInt = 64
    beta: Annotated[float, Field(ge=0.0)] = 0.02  # KL coefficient (0: no reference model)
    test_size: PositiveInt = 200  # prompts held out (greedy accuracy vs the parent)
    eval_batch_size: PositiveInt = 128

    @model_validator(mode="after")
    def _groups_fill_batches(self) -> RLVRParams:
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"rlvr.batch_size ({self.batch_size}) must be a multiple of rlvr.num_generations "
                f"({self.num_generations}): each step samples whole groups"
            )
        return self
