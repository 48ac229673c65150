"""Counting attempts in PostgreSQL, so limits hold across every worker process and host.

Fixed windows: one row per (key, window start) counts events; `hit` adds one and returns the
count, in one statement. Old windows are deleted as they are passed.
"""

from __future__ import annotations

import time
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


def count(session: Session, key: str, limit: Limit, now: float | None = None) -> int:
    now = time.time() if now is None else now
    return (
        session.execute(
            text("SELECT count FROM rate_limit_buckets WHERE key = :key AND window_start = :start"),
            {"key": key, "start": limit.window_start(now)},
        ).scalar()
        or 0
    )


def clear(session: Session, key: str) -> None:
    session.execute(text("DELETE FROM rate_limit_buckets WHERE key = :key"), {"key": key})


def prune(session: Session, older_than_seconds: int = 86_400, now: float | None = None) -> int:
    now = time.time() if now is None else now
    return session.execute(
        text("DELETE FROM rate_limit_buckets WHERE window_start < :cutoff"),
        {"cutoff": int(now - older_than_seconds)},
    ).rowcount
