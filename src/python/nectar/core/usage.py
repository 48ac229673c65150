"""What an organization used, per UTC day, as the database counted it when its runs ended
(usage_daily, migration 0021): read under its tenant scope, summed over the rows a day is spread over.
And the monthly quota of plans without overage: past their included runs, new runs are refused
until the month ends (UTC)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from nectar.core.contract.plans import month_after, plan_of
from nectar.schema.models import UsageDay
from nectar.shared.config import CACHE_MAX_AGE_SECONDS
from nectar.shared.database import SET_TENANT_SQL, in_one_round_trip, one_per_database

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


# A process trusts its count of an organization's runs this month for the settings' cache_max_age
# (CACHE_MAX_AGE_SECONDS): a quota is enforced within that many seconds (plus the runs under way,
# which count when they end), without a database round trip on each call.
_MONTH_RUNS_SQL = "SELECT coalesce(sum(runs), 0) FROM usage_daily WHERE org_id = %(org)s AND day >= %(first)s"


@dataclass(frozen=True)
class QuotaUsedUp:
    """The organization's plan includes `limit` runs a month and they are used; the count starts
    again at `resets_at`."""

    plan_name: str
    limit: int
    resets_at: datetime

    def __str__(self) -> str:
        return (
            f"This organization's {self.plan_name} plan includes {self.limit:,} runs a month, and they are "
            f"used up: new runs are refused until {self.resets_at:%Y-%m-%d %H:%M} UTC, or a paid plan."
        )


class MonthlyRuns:
    """Each organization's runs this month as this process last read them (one per database)."""

    def __init__(self, engine: Engine):
        self.engine, self._lock, self._read = engine, threading.Lock(), {}

    def count(self, org_id: uuid.UUID, first: date, max_age: float = CACHE_MAX_AGE_SECONDS) -> int:
        known = self._read.get(org_id)  # one entry per organization: a new month replaces it
        if known is not None and known[0] == first and time.monotonic() - known[1] < max_age:
            return known[2]
        _, rows = in_one_round_trip(
            self.engine,
            [(SET_TENANT_SQL, (str(org_id),)), (_MONTH_RUNS_SQL, {"org": org_id, "first": first})],
        )
        runs = int(rows[0][0])
        with self._lock:
            self._read[org_id] = (first, time.monotonic(), runs)
        return runs


def quota_used_up(
    engine: Engine,
    org_id: uuid.UUID,
    plan_key: str | None,
    under_way: int = 0,
    max_age: float = CACHE_MAX_AGE_SECONDS,
) -> QuotaUsedUp | None:
    """Whether the organization may not start runs now: its plan has no overage and this month's
    included runs (as read at most `max_age` seconds ago) are used, counting `under_way` runs that
    have not ended (QuotaUsedUp), or None. Plans with overage return at once."""
    plan = plan_of(plan_key)
    if plan.overage:
        return None
    first, _today = month_so_far(datetime.now(UTC).date())
    if one_per_database(engine, MonthlyRuns).count(org_id, first, max_age) + under_way < plan.included.runs:
        return None
    return QuotaUsedUp(
        plan.name, plan.included.runs, datetime.combine(month_after(first), time_of_day(), UTC)
    )
