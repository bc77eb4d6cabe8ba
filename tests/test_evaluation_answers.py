"""Answer extraction on GSM8K reference solutions and on model-like outputs."""

from __future__ import annotations

import pytest

from deltalab.evaluation.answers import (
    answers_match,
    extract_answer,
    gold_from_gsm8k_answer,
    normalize_number,
)

# Real GSM8K test/train reference solutions (calculator annotations included).
GSM8K_ANSWERS = [
    (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        "72",
    ),
    (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18",
        "18",
    ),
    (
        "The cost of the house and repairs came out to "
        "80,000+50,000=$<<80000+50000=130000>>130,000\n"
        "He increased the value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\n"
        "So the new value of the house is 120,000+80,000=$<<120000+80000=200000>>200,000\n"
        "So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000",
        "70000",
    ),
    ("He pays 1,000 a month.\n#### 1,000", "1000"),
    ("The temperature drops to -5 degrees.\n#### -5", "-5"),
    ("Each share is 2.50 dollars.\n#### 2.5", "2.5"),
]


@pytest.mark.parametrize(("answer", "gold"), GSM8K_ANSWERS)
def test_gsm8k_reference_answers(answer: str, gold: str) -> None:
    assert gold_from_gsm8k_answer(answer) == gold
    assert extract_answer(answer) == gold


def test_gold_without_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="####"):
        gold_from_gsm8k_answer("The answer is 5")
    with pytest.raises(ValueError, match="no number"):
        gold_from_gsm8k_answer("#### many")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the marker wins over a later number and over "the answer is"
        ("3+4=7. The answer is 7.\n#### 8 people", "8"),
        # first marker: a run-on into a new turn must not replace the answer
        (" 5*3=15.\n#### 15\nUser: How many?\nAssistant: 2+2=4\n#### 4", "15"),
        # "the answer is" before the last number
        ("So the answer is 12. Then 99 balloons flew away.", "12"),
        ("The final answer is: **$1,250**.", "1250"),
        ("the answer is -3 degrees", "-3"),
        # last-number fallback
        ("She has 3 + 4 = 7 apples", "7"),
        ("Total: $1,234.50", "1234.5"),
        ("It is 42.", "42"),
        ("We get 1,2,3 then 4", "4"),  # not a thousands separator
        ("10-5=5 so 5", "5"),
        ("12 - 5", "5"),  # a minus between numbers is not a sign
        ("It changes by -7", "-7"),
        ("It costs -$4 now", "-4"),
        ("a ratio of 0.50", "0.5"),
        ("3.0 hours", "3"),
        # no number at all
        ("I do not know.", None),
        ("", None),
        ("####", None),
        # truncated output: marker cut off, fall back to the last number seen
        ("Step 1: 6*7=42. Step 2: 42+8=50. The answer is", "50"),
        ("Step 1: 6*7=42.\n#### ", "42"),
        # degenerate repetition
        ("the the the the the the", None),
        ("7 7 7 7 7 7 7 7 7 7 7 7", "7"),
        (" 12<|endoftext|>", "12"),
        # numbers glued to words are not numbers (model ids, versions)
        ("v2 model says x3", None),
    ],
)
def test_model_like_outputs(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a trailing mul token is the product, not its last digit or a separate number
        ("He buys <MUL_6_9_54>", "54"),
        ("<MUL_6_9_54> apples", "54"),
        # digits inside a token are not numbers of their own: the marker's equation gives c
        ("#### <MUL_3_4_12>", "12"),
        ("The answer is <MUL_2_9_18>.", "18"),
        # a mul token inside a calculator annotation, then the real final answer
        ("<<<MUL_2_9_18>>>18 eggs, 18+2=<<18+2=20>>20\n#### 20", "20"),
        # the tokens do not fake a number after the real one
        ("The answer is 7. <MUL_1_1_1>", "7"),
        ("#### 30 <MUL_5_6_30>", "30"),
        # a malformed token-looking string is just text with digits
        ("<MUL_x>", None),
    ],
)
def test_mul_tokens_decoded_first(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", "1234"),
        ("$5", "5"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("007", "7"),
        ("2.500", "2.5"),
        ("1e3", "1000"),
        ("42.", "42"),
        ("abc", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


def test_answers_match_is_numeric() -> None:
    assert answers_match("42.0", "42")
    assert answers_match("1,000", "1000")
    assert answers_match("-3", "-3.00")
    assert not answers_match("43", "42")
    assert not answers_match(None, "42")
    assert not answers_match("x", "42")
