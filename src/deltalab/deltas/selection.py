"""Which tensors an analysis reads: regular expressions on tensor names (include / exclude).

Errors name the patterns by the keyword of `analyze` they came from (`include`, `exclude`); the
command line words them with its own flags.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deltalab.errors import ConfigError


class NoTensorMatches(ConfigError):
    """The patterns select none of the `of` tensors of the checkpoints."""

    def __init__(self, of: int, include: Sequence[str], exclude: Sequence[str]) -> None:
        self.of, self.include, self.exclude = of, list(include), list(exclude)
        super().__init__(f"no tensor of {of} matches include {self.include} exclude {self.exclude}")


def compile_patterns(patterns: Sequence[str] | None, name: str) -> list[re.Pattern]:
    """The compiled patterns; ConfigError naming the bad one as `name 'pattern'`."""
    out = []
    for pat in patterns or []:
        try:
            out.append(re.compile(pat))
        except re.error as exc:
            raise ConfigError(f"{name} {pat!r}: invalid regular expression ({exc})") from exc
    return out


def select_names(
    names: Sequence[str], include: Sequence[str] | None, exclude: Sequence[str] | None
) -> list[str]:
    """Names that `re.search` any `include` (all names when none is given) and no `exclude`."""
    inc, exc = compile_patterns(include, "include"), compile_patterns(exclude, "exclude")
    return [
        n
        for n in names
        if (not inc or any(p.search(n) for p in inc)) and not any(p.search(n) for p in exc)
    ]
