"""Rate windows: each organization's endpoint calls per minute, counted where runs are written.

A call is admitted for the length of a block, `with counts.admitted(org_id, limit) as admission`:
refused (None) once the organization reached its plan's limit this minute, and otherwise counted
in memory until the database has it. The block settles the admission when it ends, unless the
call was handed to the run writer (writer.py), which settles it when written: either way once,
whatever fails in between.

An organization's calls this minute are the total read back after this process's last write, plus
its calls still in flight. Another process's calls are seen at this process's next write, so under
load the limit holds to within the few calls in flight at once.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

WINDOW_SECONDS = 60
RATE_SHARDS = 16


def current_window() -> int:
    return int(time.time() // WINDOW_SECONDS * WINDOW_SECONDS)


def rate_keys(org_id: uuid.UUID) -> list[str]:
    return [f"core.endpoint:{org_id}:{shard}" for shard in range(RATE_SHARDS)]


def rate_key(org_id: uuid.UUID) -> str:
    """The counter this process counts an organization's calls in. The count is spread over
    RATE_SHARDS rows (one per process, roughly), so processes rarely wait for each other's lock."""
    return f"core.endpoint:{org_id}:{os.getpid() % RATE_SHARDS}"


CALLS_SQL = (
    "SELECT COALESCE(sum(count), 0) AS calls_this_minute FROM rate_limit_buckets "
    "WHERE key = ANY(%(keys)s) AND window_start = %(window)s"
)


def calls_params(org_id: uuid.UUID, window: int) -> dict:
    return {"keys": rate_keys(org_id), "window": window}


@dataclass
class Admission:
    """One call admitted in `window`: settled when its block ends, unless handed to the writer."""

    org_id: uuid.UUID
    window: int
    handed_over: bool = False  # the writer settles it once written
    written: bool = False  # written by the block itself (a run in the request's own transaction)


@dataclass
class _Count:
    window: int
    confirmed: int  # the database's total after this process's last write
    in_flight: int = 0  # admitted here and not yet written


class CallCounts:
    """Each organization's calls this minute as this process knows them."""

    def __init__(self, read_total):
        self._read_total = read_total  # (org_id, window) -> the database's count
        self._counts: dict[uuid.UUID, _Count] = {}
        self._lock = threading.Lock()

    def admit(self, org_id: uuid.UUID, limit: int) -> int | None:
        """Counts one call in this minute's window and returns the window, unless the organization
        reached `limit` in it (None). Every admitted call is settled once written or given up."""
        window = current_window()
        count = self._counts.get(org_id)
        if count is None or count.window != window:
            total = self._read_total(org_id, window)  # once per organization and minute
            with self._lock:
                count = self._counts.get(org_id)
                if count is None or count.window != window:
                    if len(self._counts) > 10_000:
                        self._counts = {k: c for k, c in self._counts.items() if c.window == window}
                    count = self._counts[org_id] = _Count(window, total)
        with self._lock:
            if count.confirmed + count.in_flight >= limit:
                return None
            count.in_flight += 1
            return window

    def settle(self, org_id: uuid.UUID, window: int, *, written: bool, total: int | None = None) -> None:
        """One admitted call was written to the database's count (with the total read back then, if
        any) or was not."""
        with self._lock:
            count = self._counts.get(org_id)
            if count is not None and count.window == window:
                count.in_flight = max(0, count.in_flight - 1)
                if written:  # the total read back includes this call
                    count.confirmed = count.confirmed + 1 if total is None else max(count.confirmed, total)

    @contextmanager
    def admitted(self, org_id: uuid.UUID, limit: int) -> Iterator[Admission | None]:
        """The call admitted in this minute's window for the block, or None when the organization
        reached `limit`. Settled once when the block ends, unless handed over to the writer."""
        window = self.admit(org_id, limit)
        if window is None:
            yield None
            return
        admission = Admission(org_id, window)
        try:
            yield admission
        finally:
            if not admission.handed_over:
                self.settle(org_id, window, written=admission.written)
