"""The time limit of the tenant-defined work a thread is doing: an endpoint call's schema check,
expressions, templates and loops all count against the one limit of the call (or run).

Work that may take long checks `check()` as it goes (between JSON Schema keywords, every so many
steps of an expression, before each workflow step); past the deadline it raises, and the call
answers 504 as any run over its time limit does. Outside `within(...)` there is no limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TimeLimitExceeded(Exception):
    """Tenant-defined work ran past the time limit of its call or run."""

    def __init__(self, seconds: float):
        super().__init__(f"the run exceeded its time limit of {seconds:g} s")
        self.seconds = seconds


class _Limit(threading.local):
    deadline: float | None = None
    seconds: float = 0.0
    clock: Callable[[], float] = time.monotonic


_current = _Limit()


@contextmanager
def within(deadline: float, seconds: float, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Work on this thread inside the block must end by `deadline` (a `clock()` time), which is
    `seconds` after the call or run started."""
    saved = _current.deadline, _current.seconds, _current.clock
    _current.deadline, _current.seconds, _current.clock = deadline, seconds, clock
    try:
        yield
    finally:
        _current.deadline, _current.seconds, _current.clock = saved


def check() -> None:
    """Raises TimeLimitExceeded when this thread's work is past its deadline."""
    deadline = _current.deadline
    if deadline is not None and _current.clock() > deadline:
        raise TimeLimitExceeded(_current.seconds)
