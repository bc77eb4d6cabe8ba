"""What every stage script shares: argument parsing, params loading, clean failure."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import transformers

from deltalab.config import load_params
from deltalab.errors import DeltalabError


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
