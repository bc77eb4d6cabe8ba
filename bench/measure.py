"""Wall time and peak RSS of a command, run in its own process.

The peak comes from GNU time (`/usr/bin/time -f %M`), whose child is forked from that small
process: a child forked straight from a benchmark that holds gigabytes would inherit their
high-water mark (Linux keeps `ru_maxrss` across fork and exec). Without GNU time, `os.wait4`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, stdout) of `cmd`; a failure exits with its stderr."""
    gnu_time = shutil.which("time") and os.path.exists("/usr/bin/time")
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        full = ["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd] if gnu_time else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out, err = proc.stdout.read(), proc.stderr.read()
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-3000:]}")
        kb = int(rss.read().strip().splitlines()[-1]) if gnu_time else usage.ru_maxrss
    return seconds, kb * 1024 / 1e9, out
