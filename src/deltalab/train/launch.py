"""Training stages on several processes through the standard launchers.

A training stage script wraps its `main` in `distributed`: with `runtime.processes` > 1 the stage
command runs itself again under `runtime.launcher` (torchrun, or accelerate launch with
`runtime.accelerate_config`, e.g. FSDP for the 8B profiles), one process per rank, and waits
for it. Ranks see `LOCAL_RANK` and run `main`; one process (the default) runs `main` directly.
The command DVC runs never changes, only params.yaml does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

from deltalab.schema.runtime import RuntimeParams


def launch_command(runtime: RuntimeParams, argv: list[str]) -> list[str]:
    """This stage's command line under the launcher, `runtime.processes` ranks on this node."""
    n = str(runtime.processes)
    if runtime.launcher == "accelerate":
        config = ["--config_file", runtime.accelerate_config] if runtime.accelerate_config else []
        launcher = ["-m", "accelerate.commands.launch", *config, "--num_processes", n]
    else:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n]
    return [sys.executable, *launcher, *argv]


def distributed(main: Callable[..., Any]) -> Callable[..., Any]:
    """`main(params, **args)` on `params.runtime.processes` ranks (see the module docstring)."""

    @wraps(main)
    def on_ranks(params, **args: Any) -> Any:
        if params.runtime.processes > 1 and "LOCAL_RANK" not in os.environ:
            sys.exit(subprocess.run(launch_command(params.runtime, sys.argv)).returncode)
        return main(params, **args)

    return on_ranks
