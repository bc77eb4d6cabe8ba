"""Answer extraction and numeric comparison: the one place that decides what a model answered.

Order (first rule that finds a number wins):

1. the first `#### N` (GSM8K's final-answer marker),
2. the first "the answer is N" (case-insensitive, "final answer is" too),
3. the last number anywhere in the text.

The *first* marker wins because models that never stop tend to run on into a new
`User: ... Assistant: ... #### M` turn; the first marker is the answer to the question asked. A
marker followed by an equation (`#### 6*9=54`, which is also what a decoded mul token after the
marker looks like) yields the equation's result. Mul tokens are decoded to `a*b=c` first, so the
digits inside `<MUL_6_9_54>` neither hide the product nor count as separate numbers.

Numbers: optional `-` (not when glued to a preceding word/digit, so `10-5` is not `-5`), optional
`$`, `,` thousands separators only in groups of three (`1,234` -> 1234, while `1,2,3` is a list),
decimals (`3.50` -> 3.5, `42.` at a sentence end -> 42). Normalized strings have no sign on zero,
no trailing zeros and no exponent, so equal values compare equal as strings too.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from deltalab.tokens import decode_mul_tokens

# A number not glued to a preceding word character or decimal point ("x2", "v1.5", the "5" of
# "3.5" must not start a match); thousands groups only when they are exactly three digits.
_NUM = (
    r"(?<![\w.)\]])(?:-\$?|\$[ \t]?-?)?"
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?)"
)
_NUMBER = re.compile(_NUM)
_OP = r"[ \t]*[-+*/×x][ \t]*"
# What may follow a marker: an equation (take its result) or a plain number.
_AFTER_MARKER = (
    rf"(?:(?:{_NUM})(?:{_OP}(?:{_NUM}))+[ \t]*=[ \t]*(?P<result>{_NUM})|(?P<number>{_NUM}))"
)
_HASH_MARKER = re.compile(r"####[\s:*]*" + _AFTER_MARKER)
_ANSWER_IS = re.compile(
    r"\banswer\s+is\s*[:*]*\s*(?:\*\*)?\s*" + _AFTER_MARKER,
    flags=re.IGNORECASE,
)


def normalize_number(text: str) -> str | None:
    """Canonical string for a number written with `$`, `,`, spaces or a sign; None if not one."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "")
    if cleaned.endswith("."):
        cleaned = cleaned[:-1]
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))  # also turns -0 into 0 and 1E+3 into 1000
    return format(value.normalize(), "f")


def _from_marker(match: re.Match[str]) -> str | None:
    return normalize_number(match["result"] if match["result"] is not None else match["number"])


def extract_answer(text: str) -> str | None:
    """The model's final numeric answer as a normalized string, or None when there is no number."""
    text = decode_mul_tokens(text)
    for marker in (_HASH_MARKER, _ANSWER_IS):
        match = marker.search(text)
        if match is not None:
            return _from_marker(match)
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    return normalize_number(numbers[-1])


def gold_from_gsm8k_answer(answer: str) -> str:
    """The gold number of a GSM8K reference solution: what follows the last `####`."""
    if "####" not in answer:
        raise ValueError("a GSM8K answer must end with '#### N'")
    gold = normalize_number(answer.rsplit("####", 1)[1])
    if gold is None:
        raise ValueError(f"no number after '####' in {answer[-40:]!r}")
    return gold


def answers_match(predicted: str | None, gold: str) -> bool:
    """Numeric equality of an extracted answer and a gold answer (`42.0` equals `42`)."""
    if predicted is None:
        return False
    a, b = normalize_number(predicted), normalize_number(gold)
    if a is None or b is None:
        return False
    return Decimal(a) == Decimal(b)
