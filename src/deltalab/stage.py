"""What every stage script shares: argument parsing, params loading, clean failure, the summary.

Nothing heavy is imported here: a stage pays for torch or transformers only if it uses them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltalab import paths
from deltalab.atomic import write_json
from deltalab.config import Params, load_params
from deltalab.errors import ConfigError, DeltalabError
from deltalab.schema.study import CheckpointSpec
from deltalab.tensors.imports import resolve
from deltalab.tokens import text_transform


def run(main: Callable[..., Any], **arguments: type) -> None:
    """Parse `--name value` for each keyword, load params.yaml, call `main(params, **args)`.

    A DeltalabError (bad params, missing or corrupt input) prints one clear line and exits 2.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="params.yaml")
    for name, kind in arguments.items():
        parser.add_argument(f"--{name}", type=kind, required=True)
    args = vars(parser.parse_args())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Read by transformers when (and only if) it is first imported: no import here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    try:
        params = load_params(args.pop("params"))
        if unpinned := params.unpinned():
            raise ConfigError("not runnable until pinned:\n  " + "\n  ".join(unpinned))
        main(params, **args)
    except DeltalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def is_main_process() -> bool:
    """Rank 0, or no launcher at all: the process that writes a stage's outputs."""
    return os.environ.get("RANK", "0") == "0"


def made_here(params: Params, checkpoint: str, recipe: str) -> CheckpointSpec:
    """The declaration of the checkpoint a recipe stage makes (`--checkpoint`): it must be in
    `study.checkpoints` with this recipe, or the stage stops before any work."""
    spec = params.study.checkpoints.get(checkpoint)
    if spec is None:
        raise ConfigError(f"--checkpoint {checkpoint}: not in study.checkpoints")
    if spec.recipe != recipe:
        raise ConfigError(
            f"study.checkpoints.{checkpoint}.recipe is {spec.recipe!r}; this stage is {recipe!r}"
        )
    return spec


def checkpoint(cond: str, seed: int, name: str) -> Path:
    """The directory to read checkpoint `name` of a member from: its stage output, or for an
    imported checkpoint the files its manifest lists, each verified by size and sha256."""
    return resolve(paths.checkpoint(cond, seed, name))


def transform(params: Params, cond: str) -> Callable[[str], str]:
    """The text transform `study.transforms` declares for a condition."""
    return text_transform(params.study.transforms.get(cond, "none"))


def finish(path: str | os.PathLike, metrics: object, summary: str) -> None:
    """Write a stage's metrics JSON (atomically) and print its one-line summary (rank 0 only)."""
    if is_main_process():
        write_json(path, metrics)
        print(summary)
