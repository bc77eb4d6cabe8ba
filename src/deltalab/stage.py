"""What every stage script shares: argument parsing, params loading, clean failure, the summary.

Nothing heavy is imported here: a stage pays for torch or transformers only if it uses them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from deltalab.atomic import write_json
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
    # Read by transformers when (and only if) it is first imported: no import here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    try:
        params = load_params(args.pop("params"))
        main(params, **args)
    except DeltalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def finish(path: str | os.PathLike, metrics: object, summary: str) -> None:
    """Write a stage's metrics JSON (atomically) and print its one-line summary."""
    write_json(path, metrics)
    print(summary)
