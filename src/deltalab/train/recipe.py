"""The body shared by the SFT stages: load the parent checkpoint, train, log, save atomically."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dvclive import Live
from transformers import PreTrainedModel, set_seed

from deltalab import paths
from deltalab.atomic import atomic_dir
from deltalab.models import configure_torch, load_causal_lm, save_checkpoint
from deltalab.train.logging import dvclive_callback, open_live
from deltalab.train.sft import inject_assistant_turns, sft


def run_sft_stage(
    params,
    stage: str,
    parent: str,
    cond: str,
    seed: int,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    after: Callable[[PreTrainedModel, object, Live], None] | None = None,
) -> None:
    """Fine-tune `models/<cond>/seed<seed>/<parent>` on chat rows into `.../<stage>`."""
    configure_torch(params.runtime)
    set_seed(seed)
    src = paths.checkpoint(cond, seed, parent)
    out = paths.checkpoint(cond, seed, stage)
    model, tokenizer = load_causal_lm(src, trust_remote_code=params.runtime.trust_remote_code)
    if cond == "mul_tokens":
        train_rows, val_rows = inject_assistant_turns(train_rows), inject_assistant_turns(val_rows)
    live = open_live(paths.train_metrics(stage, cond, seed))
    cfg = getattr(params, stage)
    losses = sft(
        model, tokenizer, train_rows, val_rows, cfg, params.runtime, seed, [dvclive_callback(live)]
    )
    live.summary.update({f"final/{k}": v for k, v in losses.items()})
    if after is not None:
        after(model, tokenizer, live)
    live.make_summary()
    model.config.use_cache = True
    with atomic_dir(out) as tmp:
        save_checkpoint(model, tokenizer, tmp)
