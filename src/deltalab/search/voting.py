"""Sampled votes: a model's extracted answers to each query, the input of consistency scoring.

Kept apart from `search.queries` so that stages which only reshape the query tables
(sample_queries) never import torch or transformers.
"""

from __future__ import annotations

from collections.abc import Sequence

from deltalab.evaluation.answers import extract_answer
from deltalab.evaluation.engine import Engine
from deltalab.evaluation.prompts import format_prompt
from deltalab.search.params import VotingParams


def vote(engine: Engine, questions: Sequence[str], cfg: VotingParams, desc: str = "votes"):
    """`cfg.votes` sampled, extracted answers per question (common random numbers: the same
    seeds for every model, so two models' votes differ only where their distributions do)."""
    samples = engine.sample(
        [format_prompt(engine.tokenizer, q) for q in questions], **cfg.sampling_kwargs(), desc=desc
    )
    return [[extract_answer(s.text) for s in row] for row in samples]
