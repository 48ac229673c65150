"""Counting attempts in PostgreSQL, so limits hold across every worker process and host.

Fixed windows: one row per (key, window start) counts events; `hit` adds one and returns the
count, in one statement. Old windows are deleted as they are passed.

A limit is checked against the count `hit` returns, never against one read before: concurrent
attempts each get a different count (the row lock orders them), so at most `events` of them see a
count within the limit. Reading first and counting after lets every attempt that read before the
others counted through.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Limit:
    events: int
    window_seconds: int

    def window_start(self, now: float) -> int:
        return int(now // self.window_seconds * self.window_seconds)

    def seconds_left(self, now: float) -> int:
        return max(1, int(self.window_start(now) + self.window_seconds - now))


def hit(session: Session, key: str, limit: Limit, now: float | None = None) -> int:
    """Counts one event for `key` in the current window and returns the window's count."""
    now = time.time() if now is None else now
    return session.execute(
        text(
            "INSERT INTO rate_limit_buckets (key, window_start, count) VALUES (:key, :start, 1) "
            "ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limit_buckets.count + 1 "
            "RETURNING count"
        ),
        {"key": key, "start": limit.window_start(now)},
    ).scalar_one()


def take(session: Session, counters: Sequence[tuple[str, Limit]], now: float | None = None):
    """Counts one attempt against every `(key, limit)` and returns None when each count is within its
    limit. Otherwise returns the first `(key, limit)` past it, with the attempt taken back from the
    counters it reached: a refused attempt counts against nothing."""
    now = time.time() if now is None else now
    for reached, (key, limit) in enumerate(counters, start=1):
        if hit(session, key, limit, now) > limit.events:
            give_back(session, counters[:reached], now)
            return key, limit
    return None


def give_back(session: Session, counters: Sequence[tuple[str, Limit]], now: float | None = None) -> None:
    """Takes back one attempt counted by `take` at `now` (one that was refused, or turned out not to
    be what the limit is about, such as a sign-in with the right password)."""
    now = time.time() if now is None else now
    for key, limit in counters:
        session.execute(
            text(
                "UPDATE rate_limit_buckets SET count = count - 1 "
                "WHERE key = :key AND window_start = :start AND count > 0"
            ),
            {"key": key, "start": limit.window_start(now)},
        )


def clear(session: Session, key: str) -> None:
    """Forgets every count of `key` (e.g. failed sign-ins, after a successful one)."""
    session.execute(text("DELETE FROM rate_limit_buckets WHERE key = :key"), {"key": key})


def prune(session: Session, older_than_seconds: int = 86_400, now: float | None = None) -> int:
    """Deletes windows that started more than `older_than_seconds` ago; returns how many."""
    now = time.time() if now is None else now
    return session.execute(
        text("DELETE FROM rate_limit_buckets WHERE window_start < :cutoff"),
        {"cutoff": int(now - older_than_seconds)},
    ).rowcount
