"""What every stage script shares: argument parsing, params loading, clean failure."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import transformers

from deltalab.config import load_params
from deltalab.errors import ConfigError, DeltalabError


def require_delta_track(params, cond: str, seed: int) -> None:
    """Delta-track stages run only for `delta_track.conditions` × `delta_track.seeds`."""
    if cond not in params.delta_track.conditions:
        raise ConfigError(
            f"delta_track.conditions: {cond!r} is not one of {params.delta_track.conditions}"
        )
    if seed not in params.delta_track.seeds:
        raise ConfigError(f"delta_track.seeds: {seed} is not one of {params.delta_track.seeds}")


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
    transformers.logging.set_verbosity_warning()
    try:
        params = load_params(args.pop("params"))
        main(params, **args)
    except DeltalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
