"""Evaluation: batched greedy generation, answer extraction, GSM8K/probe scoring, paired statistics.

Heavy imports (torch, transformers) happen in the submodules that need them; importing
`extract_answer` from here stays cheap.
"""

from deltalab.evaluation.answers import (
    answers_match,
    extract_answer,
    gold_from_gsm8k_answer,
    normalize_number,
)

__all__ = ["answers_match", "extract_answer", "gold_from_gsm8k_answer", "normalize_number"]
