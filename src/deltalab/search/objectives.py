"""The two label-free objectives of one search trial, computed in process on the live model.

consistency (maximize): mean over queries of the most common answer's share of `votes` samples;
prompt perplexity (minimize): exp of the mean over queries of each chat-formatted question's mean
token NLL. The weights come from `LiveMerge.apply`: no checkpoint is written per trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from deltalab.errors import CheckpointError, DataError
from deltalab.evaluation.engine import Engine
from deltalab.evaluation.perplexity import prompt_perplexity  # noqa: F401 (tests, bench)
from deltalab.search.params import SearchParams
from deltalab.search.queries import consistency
from deltalab.search.voting import vote


@dataclass
class TrialResult:
    consistency: float
    perplexity: float
    seconds: dict[str, float] = field(default_factory=dict)  # apply, generate, perplexity


class SearchObjective:
    """(scale_sft, scale_rlvr) and any searched method parameters → TrialResult on the queries,
    reusing one engine in memory: `apply(scales[, values])` sets its weights (`LiveModel.apply`:
    in place, from the master copy)."""

    def __init__(
        self,
        engine: Engine,
        apply: Callable[[Sequence[float], Mapping[str, float] | None], None],
        questions: Sequence[str],
        cfg: SearchParams,
    ) -> None:
        if not questions:
            raise DataError("the search has no queries")
        self.engine, self.apply = engine, apply
        self.questions, self.cfg = list(questions), cfg

    def __call__(
        self, scales: Sequence[float], values: Mapping[str, float] | None = None
    ) -> TrialResult:
        t0 = time.perf_counter()
        self.apply(scales, values or None)
        t1 = time.perf_counter()
        try:
            votes = vote(self.engine, self.questions, self.cfg, desc="trial")
        except CheckpointError:  # NaN/inf logits at extreme scales: no answer distribution
            return TrialResult(float("nan"), float("nan"), {"apply": t1 - t0})
        t2 = time.perf_counter()
        score = sum(consistency(v)[0] for v in votes) / len(votes)
        ppl = self.engine.prompt_perplexity(self.questions, batch_size=self.cfg.ppl_batch_size)
        t3 = time.perf_counter()
        return TrialResult(
            score, ppl, {"apply": t1 - t0, "generate": t2 - t1, "perplexity": t3 - t2}
        )
