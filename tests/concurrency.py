"""Running one action from many threads at the same moment, and counting what a third-party
function did meanwhile: for tests of limits that must hold under concurrency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def at_once(count: int, action: Callable[[int], T]) -> list[T]:
    """Calls `action(0..count-1)`, each on its own thread, all released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=60)
        return action(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


@contextmanager
def calls_counted(owner: object, name: str) -> Iterator[list[int]]:
    """Counts the calls of `owner.name` (a third-party function, still called) while the block runs:
    the yielded list holds one number, the count so far."""
    original = getattr(owner, name)
    counted = [0]
    lock = threading.Lock()

    def counting(*args, **kwargs):
        with lock:
            counted[0] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counting)
    try:
        yield counted
    finally:
        setattr(owner, name, original)


def within_one_window(limit, attempt: Callable[[], None]) -> None:
    """Runs `attempt` again (once) when it straddled the boundary of the limit's fixed window,
    where the counts start over by design."""
    started = limit.window_start(time.time())
    try:
        attempt()
    except AssertionError:
        if limit.window_start(time.time()) == started:
            raise
        attempt()


def wait_for_lock_waiters(database, count: int, statement_start: str = "") -> None:
    """Until `count` sessions of the test database wait for a lock in a statement starting with
    `statement_start` (any statement when empty). Read as the superuser, who sees every role's."""
    from nectar.shared.embedded_postgres import SUPERUSER

    deadline = time.monotonic() + 30
    with database.connect(SUPERUSER, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE %s",
                (statement_start + "%",),
            ).fetchone()[0]
            if waiting >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"{count} requests never both waited on {statement_start or 'a lock'!r}")


def wrong_passwords_at_once(attackers: list, email: str, limit) -> None:
    """Twenty wrong passwords for `email` from `attackers` (browsers with csrf_token and post) at
    the same moment: at most `limit.events` are checked (argon2 verify), and the rest get 429."""
    import argon2

    tokens = [attacker.csrf_token() for attacker in attackers]
    with calls_counted(argon2.PasswordHasher, "verify") as verified:
        answers = at_once(
            len(attackers),
            lambda i: attackers[i].post(
                "/login", {"email": email, "password": f"wrong guess number {i}", "csrf_token": tokens[i]}
            ),
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(401) <= limit.events, statuses
    assert statuses.count(401) + statuses.count(429) == len(attackers), statuses
    assert verified[0] <= limit.events, f"{verified[0]} password checks"
