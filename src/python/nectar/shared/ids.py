"""Random (version 4) UUIDs for hot paths: a run per endpoint call, a request id per request."""

from __future__ import annotations

import os
import threading
import uuid


class RandomIds:
    """Random UUIDs, 256 per read of the OS's random source. A read per id is a system call that
    lets go of the GIL, and under load getting it back costs more than the read. A forked child
    starts with an empty pool, so processes never share ids."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pool: list[bytes] = []
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock, self._pool = threading.Lock(), []

    def __call__(self) -> uuid.UUID:
        with self._lock:
            if not self._pool:
                block = os.urandom(16 * 256)
                self._pool = [block[i : i + 16] for i in range(0, len(block), 16)]
            return uuid.UUID(bytes=self._pool.pop(), version=4)


random_id = RandomIds()
