"""sha256 of tensor bytes on a worker thread, overlapping hashing with reading and math."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch


class Sha256:
    """sha256 of tensor bytes, computed on a worker thread so hashing overlaps reading and math
    (hashlib releases the GIL). At most `queue` buffers wait, which bounds the memory held."""

    _pool: ThreadPoolExecutor

    @classmethod
    def _new_pool(cls) -> None:
        cls._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltalab-sha256")  # FIFO

    def __init__(self, queue: int = 2) -> None:
        self._hash = hashlib.sha256()
        self._pending: deque[Future] = deque()
        self._queue = queue

    def update(self, data: torch.Tensor) -> None:
        view = memoryview(data.reshape(-1).view(torch.uint8).numpy())  # keeps `data` alive
        self._pending.append(self._pool.submit(self._hash.update, view))
        while len(self._pending) > self._queue:
            self._pending.popleft().result()

    def wait(self) -> None:
        """Block until every queued buffer is hashed (before its memory is reused)."""
        while self._pending:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        self.wait()
        return self._hash.hexdigest()


Sha256._new_pool()
if hasattr(os, "register_at_fork"):  # POSIX: a forked child inherits the pool but not its thread
    os.register_at_fork(after_in_child=Sha256._new_pool)
