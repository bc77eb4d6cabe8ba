"""Mul tokens and the injector (DESIGN.md §Mul tokens): every rule, both directions."""

import pytest

from deltalab.tokens import (
    MUL_TOKENS,
    count_mul_tokens,
    decode_mul_tokens,
    inject_mul_tokens,
    mul_token,
)


def test_45_tokens_with_ordered_operands():
    assert len(MUL_TOKENS) == 45 == len(set(MUL_TOKENS))
    assert MUL_TOKENS[0] == "<MUL_1_1_1>" and MUL_TOKENS[-1] == "<MUL_9_9_81>"
    assert mul_token(9, 6) == mul_token(6, 9) == "<MUL_6_9_54>"
    with pytest.raises(ValueError):
        mul_token(0, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9*6", "<MUL_6_9_54>"),
        ("6*9=54", "<MUL_6_9_54>"),
        ("6 * 9 = 54", "<MUL_6_9_54>"),
        ("6 x 9 = 54", "<MUL_6_9_54>"),
        ("6x9", "<MUL_6_9_54>"),
        ("6×9=54", "<MUL_6_9_54>"),
        ("So 3*4=12.", "So <MUL_3_4_12>."),
        ("<<6*9=54>>54", "<<<MUL_6_9_54>>>54"),
        (
            "Ned spends 9*6 = <<9*6=54>>54 dollars.",
            "Ned spends <MUL_6_9_54> = <<<MUL_6_9_54>>>54 dollars.",
        ),
        ("2*3*4=24", "<MUL_2_3_6>*4=24"),
    ],
)
def test_eligible_expressions_are_rewritten(text, expected):
    assert inject_mul_tokens(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "6*9=55",  # wrong product
        "6 x 9 = 45",
        "12*3",  # multi-digit operand
        "3*12=36",
        "6*93",
        "6 times 9",  # words
        "6*9.5",  # decimals
        "0.6*9",
        "0*7=0",  # no token for zero
        "6*9=54.5",
        "<<12*3=36>>36",
        "x marks 6 spots",
    ],
)
def test_everything_else_is_left_alone(text):
    assert inject_mul_tokens(text) == text


def test_decoding_restores_numbers():
    text = "He has 9*6 = <<9*6=54>>54 eggs and 7x8=56.\n#### 54"
    injected = inject_mul_tokens(text)
    assert count_mul_tokens(injected) == 3
    decoded = decode_mul_tokens(injected)
    assert "<MUL" not in decoded
    assert decoded == "He has 6*9=54 = <<6*9=54>>54 eggs and 7*8=56.\n#### 54"
    # Idempotent on text without tokens, and injection of decoded text gives the tokens back.
    assert decode_mul_tokens(decoded) == decoded
    assert inject_mul_tokens(decoded).count("<MUL_6_9_54>") == 2
