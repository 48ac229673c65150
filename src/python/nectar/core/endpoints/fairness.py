"""Fairness between organizations on one web process: an organization's endpoint calls (and its
incoming webhooks) hold at most ORG_MAX_THREADS of the process's request threads at once.

Past its share a call is answered 429 at once rather than queued: a call waiting for a share holds
a thread as surely as one running, and the threads left are what other organizations' calls need.
Every process counts for itself, in memory (no database round trip), so the bound holds per process.
"""

from __future__ import annotations

import threading
import uuid


class ThreadShares:
    """How many request threads each organization's calls hold in this process, up to `most`."""

    def __init__(self, most: int):
        self.most = most
        self._held: dict[uuid.UUID, int] = {}
        self._lock = threading.Lock()

    def take(self, org_id: uuid.UUID) -> bool:
        """Counts one more thread held for `org_id`, unless it holds its share already (False)."""
        with self._lock:
            held = self._held.get(org_id, 0)
            if held >= self.most:
                return False
            self._held[org_id] = held + 1
            return True

    def give_back(self, org_id: uuid.UUID) -> None:
        """The thread one taken call held is free again."""
        with self._lock:
            held = self._held.pop(org_id) - 1
            if held:
                self._held[org_id] = held
