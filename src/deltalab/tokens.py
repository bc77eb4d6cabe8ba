"""Multiplication-fact tokens `<MUL_a_b_c>` and the text injector of the domain-token study.

Both conditions share one vocabulary (the 45 tokens always exist, so architectures are identical);
only the mul_tokens condition's training text is rewritten with `inject_mul_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MUL_TOKENS: list[str] = [f"<MUL_{a}_{b}_{a * b}>" for a in range(1, 10) for b in range(a, 10)]
MUL_TOKEN_PATTERN = re.compile(r"<MUL_([1-9])_([1-9])_(\d{1,2})>")

# A single-digit operand is not glued to other digits or to a decimal point on either side
# (`12*3`, `6*9.5` and `0.6*9` stay as they are), the operator is `*`, `x` or `×` with optional
# spaces, and an optional `= c` follows. The `x` form needs the digit on both sides so words stay.
_EXPRESSION = re.compile(
    r"(?<![\d.])(?P<a>[1-9])[ \t]?(?:\*|×|x)[ \t]?(?P<b>[1-9])(?![\d]|\.\d)"
    r"(?:[ \t]?=[ \t]?(?P<c>\d+(?:\.\d+)?)(?![\d]|\.\d))?"
)


def mul_token(a: int, b: int) -> str:
    """The token for `a*b` (operands are ordered, so `9*6` is `<MUL_6_9_54>`)."""
    if not (1 <= a <= 9 and 1 <= b <= 9):
        raise ValueError(f"mul tokens exist for single-digit operands 1..9, got {a}*{b}")
    lo, hi = sorted((a, b))
    return f"<MUL_{lo}_{hi}_{lo * hi}>"


def _rewrite(match: re.Match[str]) -> str:
    a, b, c = int(match["a"]), int(match["b"]), match["c"]
    if c is not None and c != str(a * b):
        return match[0]  # a wrong (or oddly written) product is a fact we must not encode
    return mul_token(a, b)


def inject_mul_tokens(text: str) -> str:
    """Rewrite eligible `a*b[=c]` expressions (plain text and `<<...>>` annotations) to tokens."""
    return _EXPRESSION.sub(_rewrite, text)


def decode_mul_tokens(text: str) -> str:
    """Turn every `<MUL_a_b_c>` back into `a*b=c`, so answer extraction sees the real numbers."""
    return MUL_TOKEN_PATTERN.sub(lambda m: f"{m[1]}*{m[2]}={m[3]}", text)


def count_mul_tokens(text: str) -> int:
    return len(MUL_TOKEN_PATTERN.findall(text))


def _unchanged(text: str) -> str:
    return text


# The text transforms a study's conditions may apply to their training data (`study.transforms`).
TRANSFORMS: dict[str, Callable[[str], str]] = {"none": _unchanged, "mul_tokens": inject_mul_tokens}


def text_transform(name: str) -> Callable[[str], str]:
    """The rewrite named by `study.transforms` (`none`: the text as it is)."""
    return TRANSFORMS[name]
