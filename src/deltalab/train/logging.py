"""dvclive wiring for transformers/TRL trainers inside DVC stages."""

from __future__ import annotations

import os
import re
from pathlib import Path

from dvclive import Live
from transformers.integrations import DVCLiveCallback

# Wall-clock figures differ on every run: keeping them out of Git-tracked metrics keeps
# `dvc metrics diff` about the experiment, and reruns byte-identical.
_NOISY = re.compile(r"runtime|per_second|total_flos|step_time")


class StepAlignedDVCLiveCallback(DVCLiveCallback):
    """DVCLiveCallback that logs at the trainer's global step.

    The stock callback advances its own counter on every log call, so train and eval losses land
    on different x values and curves of two runs do not line up.
    """

    def __init__(self, live: Live) -> None:
        super().__init__(live=live, log_model=False)
        # Skip the stock setup(), which dumps every TrainingArguments field (temp paths included)
        # into the Git-tracked metrics directory; the hyperparameters live in params.yaml.
        self._initialized = True

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self.live is not None:
            self.live.step = state.global_step
        logs = {k: v for k, v in (logs or {}).items() if not _NOISY.search(k)}
        return super().on_log(args, state, control, model=model, logs=logs, **kwargs)


def open_live(directory: str | os.PathLike) -> Live:
    """A Live that never rewrites dvc.yaml (metrics and plots are declared there statically)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Live(dir=str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def dvclive_callback(live: Live) -> StepAlignedDVCLiveCallback:
    return StepAlignedDVCLiveCallback(live)
