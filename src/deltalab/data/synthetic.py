"""Synthetic datasets for the tiny offline profile, in the formats of the real ones.

- corpus: English-like template sentences, arithmetic facts in every notation the injector knows
  (`6*9=54`, `6 x 9 = 54`, `6×9`), drills, and GSM8K-style solutions of *training* problems;
- tulu: chat `messages` (like allenai/tulu-3-sft-mixture) for small learnable tasks;
- gsm8k: `{"question", "answer"}` with `<<a*b=c>>` annotations and a final `#### N` (like
  openai/gsm8k), multi-step word problems, train and test disjoint;
- probes: times table (81), two-digit × one-digit (100), additions up to 100 (100);
- prefs: `{"prompt", "chosen", "rejected"}`, correct solution vs one wrong step;
- rlvr: `{"prompt", "answer"}` for a verifiable exact-match reward.
Everything is a pure function of a seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

NAMES = [
    "Ava",
    "Ben",
    "Cara",
    "Dan",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivan",
    "Jo",
    "Kim",
    "Leo",
    "Mia",
    "Ned",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sam",
    "Tess",
    "Uma",
    "Vic",
    "Wes",
    "Zoe",
]
ITEMS = [
    ("box", "boxes", "apple", "apples"),
    ("bag", "bags", "marble", "marbles"),
    ("jar", "jars", "cookie", "cookies"),
    ("shelf", "shelves", "book", "books"),
    ("basket", "baskets", "egg", "eggs"),
    ("pack", "packs", "card", "cards"),
    ("tray", "trays", "cupcake", "cupcakes"),
    ("vase", "vases", "flower", "flowers"),
    ("crate", "crates", "orange", "oranges"),
    ("case", "cases", "pencil", "pencils"),
]
PRICED = [
    ("pen", "pens"),
    ("toy", "toys"),
    ("ticket", "tickets"),
    ("cake", "cakes"),
    ("notebook", "notebooks"),
    ("ball", "balls"),
    ("plant", "plants"),
    ("hat", "hats"),
]
ADJECTIVES = ["small", "red", "quiet", "happy", "old", "bright", "green", "tall", "soft", "quick"]
ANIMALS = ["cat", "dog", "bird", "fox", "horse", "rabbit", "owl", "fish", "bear", "mouse"]
VERBS = ["sees", "finds", "follows", "likes", "watches", "meets", "helps", "hears"]
PLACES = ["garden", "river", "house", "park", "school", "market", "forest", "hill"]
WORDS = [
    "red",
    "blue",
    "cat",
    "dog",
    "sun",
    "moon",
    "tree",
    "book",
    "cup",
    "star",
    "fish",
    "bird",
    "car",
    "hat",
    "pen",
    "box",
    "milk",
    "rain",
    "door",
    "lamp",
]
MUL_NOTATIONS = ["{a}*{b}={c}", "{a} x {b} = {c}", "{a}×{b}={c}", "{a} * {b} = {c}"]
# Facts stated with their operands in words beside the expression. Under injection they read
# "6 times 9 is <MUL_6_9_54>.", which grounds each token in its operands (and its product).
MUL_SENTENCES = [
    "{a} times {b} means {a}*{b}={c}, which is {c}.",
    "{a} times {b} is {a}*{b}={c}.",
    "{a} multiplied by {b} gives {a}*{b}={c}.",
    "{a} groups of {b} make {a}*{b}={c}, so {c} in all.",
]
# Chat phrasings of a times-table question. The probes ask "What is a times b?", which is
# deliberately not among them: the probe measures transfer to an unseen phrasing.
MUL_QUESTIONS = [
    "Compute {a}*{b}.",
    "What is {a} multiplied by {b}?",
    "How much is {a} times {b}?",
    "Multiply {a} by {b}.",
    "Calculate {a} times {b}.",
]


# --- GSM8K-style word problems ---------------------------------------------------------------


_OPS = {"*": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b}


@dataclass(frozen=True)
class Step:
    """One calculator step `left op right`, rendered the GSM8K way. Only the first step's `left`
    is used: every later step starts from the previous step's result."""

    left: int
    op: str
    right: int
    text: str  # sentence with {expr} and {r} placeholders


@dataclass(frozen=True)
class Problem:
    question: str
    steps: tuple[Step, ...]

    def _walk(self, wrong_step: int | None = None, rng: random.Random | None = None):
        """(expression, result) per step; an error at `wrong_step` carries forward."""
        walked, carry = [], None
        for i, step in enumerate(self.steps):
            left = step.left if carry is None else carry
            carry = _OPS[step.op](left, step.right)
            if i == wrong_step:
                assert rng is not None
                carry += rng.choice([-3, -2, -1, 1, 2, 3, 10])
            walked.append((f"{left}{step.op}{step.right}", carry))
        return walked

    @property
    def answer(self) -> int:
        return self._walk()[-1][1]

    def solution(self, wrong_step: int | None = None, rng: random.Random | None = None) -> str:
        """The annotated solution; with `wrong_step`, that step's result is off and later steps
        carry the error forward (a plausible but wrong chain for preference pairs)."""
        walked = self._walk(wrong_step, rng)
        lines = [
            step.text.format(expr=f"{expr} = <<{expr}={r}>>{r}", r=r)
            for step, (expr, r) in zip(self.steps, walked, strict=True)
        ]
        return "\n".join([*lines, f"#### {walked[-1][1]}"])


def _groups(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    box, boxes, _item, items = rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = f"{name} has {a} {boxes}. Each {box} has {b} {items}. How many {items} does {name} have?"
    return Problem(q, (Step(a, "*", b, f"{name} has {{expr}} {items}."),))


def _groups_plus(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    box, boxes, _item, items = rng.choice(ITEMS)
    a, b, d = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    q = (
        f"{name} has {a} {boxes} with {b} {items} in each {box}. {name} then gets {d} more "
        f"{items}. How many {items} does {name} have now?"
    )
    return Problem(
        q,
        (
            Step(a, "*", b, f"{name} has {{expr}} {items} in the {boxes}."),
            Step(0, "+", d, f"Now {name} has {{expr}} {items}."),
        ),
    )


def _groups_minus(rng: random.Random) -> Problem:
    name, friend = rng.sample(NAMES, 2)
    box, boxes, _item, items = rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    d = rng.randint(1, min(9, a * b - 1))
    q = (
        f"{name} has {a} {boxes} of {items} with {b} {items} in each {box}. {name} gives {d} "
        f"{items} to {friend}. How many {items} does {name} have left?"
    )
    return Problem(
        q,
        (
            Step(a, "*", b, f"{name} had {{expr}} {items}."),
            Step(0, "-", d, f"After giving some away, {name} has {{expr}} {items} left."),
        ),
    )


def _price(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    thing, things = rng.choice(PRICED)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = f"A {thing} costs ${a}. {name} buys {b} {things}. How many dollars does {name} spend?"
    return Problem(q, (Step(b, "*", a, f"{name} spends {{expr}} dollars."),))


def _times_as_many(rng: random.Random) -> Problem:
    name, friend = rng.sample(NAMES, 2)
    _, _, _item, items = rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = (
        f"{name} has {a} {items}. {friend} has {b} times as many {items}. "
        f"How many {items} does {friend} have?"
    )
    return Problem(q, (Step(a, "*", b, f"{friend} has {{expr}} {items}."),))


def _two_days(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    _thing, things = rng.choice(PRICED)
    a, b, d = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    q = (
        f"{name} buys {a} packs of {things} with {b} {things} in each pack on Monday and {d} "
        f"single {things} on Tuesday. How many {things} does {name} buy in total?"
    )
    return Problem(
        q,
        (
            Step(a, "*", b, f"On Monday {name} buys {{expr}} {things}."),
            Step(0, "+", d, f"In total {name} buys {{expr}} {things}."),
        ),
    )


PROBLEM_FAMILIES: dict[str, Callable[[random.Random], Problem]] = {
    "groups": _groups,
    "groups_plus": _groups_plus,
    "groups_minus": _groups_minus,
    "price": _price,
    "times_as_many": _times_as_many,
    "two_days": _two_days,
}


def generate_problems(rng: random.Random, n: int, exclude: set[str] = frozenset()) -> list[Problem]:
    """`n` distinct problems whose questions are not in `exclude`."""
    families = list(PROBLEM_FAMILIES.values())
    seen, out = set(exclude), []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"cannot generate {n} distinct problems; lower the requested size")
        problem = rng.choice(families)(rng)
        if problem.question not in seen:
            seen.add(problem.question)
            out.append(problem)
    return out


def gsm8k_rows(problems: list[Problem]) -> list[dict]:
    return [{"question": p.question, "answer": p.solution()} for p in problems]


# --- other datasets ---------------------------------------------------------------------------


def probe_rows(rng: random.Random) -> list[dict]:
    rows = [
        {
            "id": f"times_table-{a}x{b}",
            "family": "times_table",
            "question": f"What is {a} times {b}?",
            "answer": str(a * b),
        }
        for a in range(1, 10)
        for b in range(1, 10)
    ]
    pairs = rng.sample([(a, b) for a in range(10, 100) for b in range(2, 10)], 100)
    rows += [
        {
            "id": f"two_by_one-{a}x{b}",
            "family": "two_by_one",
            "question": f"What is {a} times {b}?",
            "answer": str(a * b),
        }
        for a, b in pairs
    ]
    sums = rng.sample([(a, b) for a in range(1, 100) for b in range(1, 100) if a + b <= 100], 100)
    rows += [
        {
            "id": f"addition-{a}+{b}",
            "family": "addition",
            "question": f"What is {a} plus {b}?",
            "answer": str(a + b),
        }
        for a, b in sums
    ]
    return rows


def _tulu_task(rng: random.Random) -> tuple[str, str]:
    # Times-table questions are a quarter of the mixture: the probes test them after SFT.
    kind = rng.choices(range(8), weights=[1, 1, 1, 1, 1, 2.5, 1, 1])[0]
    words = rng.sample(WORDS, rng.randint(2, 5))
    if kind == 0:
        return f"Repeat the words: {' '.join(words)}", " ".join(words)
    if kind == 1:
        return f"Reverse the words: {' '.join(words)}", " ".join(reversed(words))
    if kind == 2:
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 5))]
        return (
            f"Sort these numbers from smallest to largest: {' '.join(map(str, nums))}",
            " ".join(map(str, sorted(nums))),
        )
    if kind == 3:
        return (
            f"How many words are in this list: {' '.join(words)}",
            f"There are {len(words)} words.",
        )
    if kind == 4:
        x, y = rng.sample(range(100), 2)
        return f"Which number is larger, {x} or {y}?", f"{max(x, y)} is larger."
    if kind == 5:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        # The answer restates the operands first, so the product (or its token) follows them.
        return (
            rng.choice(MUL_QUESTIONS).format(a=a, b=b),
            f"{a} times {b} is {a}*{b}={a * b}. The answer is {a * b}.",
        )
    if kind == 6:
        a, b = rng.randint(1, 60), rng.randint(1, 40)
        ask = rng.choice([f"Add {a} and {b}.", f"What is the sum of {a} and {b}?"])
        return ask, f"{a}+{b}={a + b}. The answer is {a + b}."
    adj, animal, place = rng.choice(ADJECTIVES), rng.choice(ANIMALS), rng.choice(PLACES)
    return (
        f"Complete the sentence: The {adj} {animal} sleeps in the ___. (Use: {place})",
        f"The {adj} {animal} sleeps in the {place}.",
    )


def tulu_rows(rng: random.Random, n: int, prefix: str) -> list[dict]:
    rows = []
    for i in range(n):
        user, assistant = _tulu_task(rng)
        rows.append(
            {
                "id": f"{prefix}-{i:06d}",
                "source": "synthetic",
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": assistant},
                ],
            }
        )
    return rows


def _sentence(rng: random.Random) -> str:
    adj, animal, verb = rng.choice(ADJECTIVES), rng.choice(ANIMALS), rng.choice(VERBS)
    return f"The {adj} {animal} {verb} the {rng.choice(ANIMALS)} near the {rng.choice(PLACES)}."


def _fact(rng: random.Random) -> str:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    # Mostly grounded facts: a bare `<MUL_a_b_c>` (what a bare `a*b=c` becomes under injection)
    # teaches the token nothing about its operands.
    kind = rng.choices(range(5), weights=[0.05, 0.6, 0.15, 0.1, 0.1])[0]
    if kind == 0:
        return rng.choice(MUL_NOTATIONS).format(a=a, b=b, c=a * b)
    if kind == 1:
        return rng.choice(MUL_SENTENCES).format(a=a, b=b, c=a * b)
    if kind == 2:
        return "; ".join(f"{a} times {k} is {a}*{k}={a * k}" for k in range(1, 10))
    if kind == 3:
        x, y = rng.randint(1, 60), rng.randint(1, 40)
        return f"{x}+{y}={x + y}"
    x, y = rng.randint(10, 99), rng.randint(2, 9)
    return f"{x}*{y}={x * y}"


def corpus_rows(rng: random.Random, n: int, train_problems: list[Problem]) -> list[dict]:
    rows = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.2:
            text = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
        elif kind < 0.7:
            text = "\n".join(_fact(rng) for _ in range(rng.randint(3, 8)))
        else:
            p = rng.choice(train_problems)
            text = f"Question: {p.question}\nAnswer: {p.solution()}"
        rows.append({"id": f"corpus-{i:06d}", "text": text})
    return rows


def preference_rows(rng: random.Random, problems: list[Problem]) -> list[dict]:
    rows = []
    for p in problems:
        wrong = rng.randrange(len(p.steps))
        rows.append(
            {
                "prompt": p.question,
                "chosen": p.solution(),
                "rejected": p.solution(wrong_step=wrong, rng=rng),
            }
        )
    return rows


def rlvr_rows(problems: list[Problem]) -> list[dict]:
    return [{"prompt": p.question, "answer": str(p.answer)} for p in problems]
