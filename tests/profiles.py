"""The real-scale profiles under configs/, and the same profiles pinned to stand-in revisions."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from tests import standins

ROOT = Path(__file__).resolve().parents[1]
REAL = ["domain-tokens-10b", "tulu3-8b", "dots-qwen2.5-math-7b", "gemma3-270m-masks"]


def raw(name: str) -> dict:
    from deltalab.config import _Yaml12Loader

    return yaml.load((ROOT / "configs" / f"{name}.yaml").read_text(), Loader=_Yaml12Loader)


def _sources(study: dict):
    for spec in study["checkpoints"].values():
        source = spec.get("source")
        if source is None:
            continue
        yield from ([source] if "id" in source else source.values())


def hub_sources(params: dict) -> list[dict]:
    """Every hub checkpoint and dataset source of a params dict (mutable: the dict's own)."""
    found = list(_sources(params["study"]))
    found += [d for k, d in params["data"].items() if isinstance(d, dict) and "name" in d]
    return found


def unpinned(name: str) -> list[str]:
    return [s.get("id", s.get("name")) for s in hub_sources(raw(name)) if not s.get("revision")]


def pinned(name: str) -> dict:
    """The profile with every hub source pinned to its stand-in revision (where unpinned)."""
    params = copy.deepcopy(raw(name))
    for source in hub_sources(params):
        if not source.get("revision"):
            source["revision"] = standins.revision(source.get("id", source.get("name")))
    return params
