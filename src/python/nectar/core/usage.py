"""What an organization used, per UTC day, as the database counted it when its runs ended
(usage_daily, migration 0021): read under its tenant scope, summed over the rows a day is spread over."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nectar.schema.models import UsageDay

ENDPOINT_TRIGGER = "http"  # an endpoint call's run
MAX_DAYS = 366


@dataclass
class Usage:
    """A day's usage, or a period's."""

    runs: dict[str, int] = field(default_factory=dict)  # by trigger
    steps: int = 0
    http_calls: int = 0
    run_ms: int = 0

    def add(self, trigger: str, runs: int, steps: int, http_calls: int, run_ms: int) -> None:
        self.runs[trigger] = self.runs.get(trigger, 0) + runs
        self.steps += steps
        self.http_calls += http_calls
        self.run_ms += run_ms

    def as_dict(self) -> dict:
        return {
            "runs": sum(self.runs.values()),
            "runs_by_trigger": dict(sorted(self.runs.items())),
            "endpoint_calls": self.runs.get(ENDPOINT_TRIGGER, 0),
            "steps": self.steps,
            "http_calls": self.http_calls,
            "run_seconds": round(self.run_ms / 1000, 3),
        }


def daily_usage(session: Session, first: date, last: date) -> tuple[dict[date, Usage], Usage]:
    """The scoped organization's usage on each day from `first` to `last` (inclusive) that has
    any, and their total."""
    rows = session.execute(
        select(
            UsageDay.day,
            UsageDay.trigger,
            func.sum(UsageDay.runs),
            func.sum(UsageDay.steps),
            func.sum(UsageDay.http_calls),
            func.sum(UsageDay.run_ms),
        )
        .where(UsageDay.day.between(first, last))
        .group_by(UsageDay.day, UsageDay.trigger)
        .order_by(UsageDay.day, UsageDay.trigger)
    ).all()
    days: dict[date, Usage] = {}
    total = Usage()
    for day, trigger, *counts in rows:
        days.setdefault(day, Usage()).add(trigger, *(int(n) for n in counts))
        total.add(trigger, *(int(n) for n in counts))
    return days, total


def month_so_far(today: date) -> tuple[date, date]:
    return today.replace(day=1), today


@dataclass(frozen=True)
class Bar:
    """A day in a chart of runs per day: its height as a share of the busiest day's."""

    day: date
    runs: int
    height: float  # 0 to 1


def runs_per_day(days: dict[date, Usage], first: date, last: date) -> list[Bar]:
    """Every day from `first` to `last`, with its runs, scaled to the busiest."""
    counts = [
        (first + timedelta(days=n), sum(days.get(first + timedelta(days=n), Usage()).runs.values()))
        for n in range((last - first).days + 1)
    ]
    busiest = max((runs for _, runs in counts), default=0) or 1
    return [Bar(day, runs, runs / busiest) for day, runs in counts]


def checked_period(first: date, last: date) -> tuple[date, date]:
    """A period to read, or ValueError saying why not."""
    if last < first:
        raise ValueError("'to' is before 'from'.")
    if last - first > timedelta(days=MAX_DAYS - 1):
        raise ValueError(f"A period is at most {MAX_DAYS} days.")
    return first, last
