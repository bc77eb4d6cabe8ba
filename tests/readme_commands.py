"""The shell commands of the README's ```bash blocks, each with the reason it is skipped (if any).

A block preceded by `<!-- skip: REASON -->` is skipped whole; a command whose comment holds
`[skip: REASON]` is skipped alone (GPU, network, a remote, training runs). Continuation lines
(`\\`) are joined; comment-only lines are not commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLOCK_SKIP = re.compile(r"<!-- skip: (.+?) -->")
LINE_SKIP = re.compile(r"\[skip: ([^\]]+)\]")


@dataclass(frozen=True)
class Command:
    text: str
    skip: str | None  # why it does not run in the test (None: it runs)


def commands(readme: str) -> list[Command]:
    found: list[Command] = []
    lines = readme.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```bash":
            i += 1
            continue
        before = lines[i - 1] if i else ""
        block_skip = m.group(1) if (m := BLOCK_SKIP.search(before)) else None
        i += 1
        body = []
        while lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        for text in re.sub(r"\\\n\s*", " ", "\n".join(body)).splitlines():
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            line_skip = m.group(1) if (m := LINE_SKIP.search(text)) else None
            found.append(Command(text, block_skip or line_skip))
        i += 1
    return found
