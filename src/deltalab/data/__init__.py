"""Datasets: synthetic generators in the real datasets' formats, hub loaders, JSONL I/O."""

from deltalab.data.jsonl import read_jsonl, write_jsonl

__all__ = ["read_jsonl", "write_jsonl"]
