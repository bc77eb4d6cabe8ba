"""The tiny profile (params.yaml) with overrides: tests validate real declarations, never a
schema default that no profile uses."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


@cache
def _tiny() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def merged(base: Any, override: Any) -> Any:
    """`override` laid over `base`: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merged(base[key], value) if key in base else value
        return out
    return copy.deepcopy(override)


def tiny_raw(overrides: dict | None = None) -> dict:
    """params.yaml's content with `overrides` merged in (a fresh copy every call)."""
    return merged(copy.deepcopy(_tiny()), overrides or {})


def tiny_params(overrides: dict | None = None):
    from deltalab.config import parse_params

    return parse_params(tiny_raw(overrides), "params.yaml + overrides")
