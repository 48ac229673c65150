"""The dashboard's figures, computed in SQL across every organization (admin bypasses row-level
security, so nothing is filtered by tenant).

Definitions, also stated on the page:
- the window: the last 30 UTC days, today included, from UTC midnight of its first day; the runs
  figures and active organizations both use it;
- active organization: at least one workflow run queued in the window;
- lead conversion: leads in stage `won` / all leads; leads that became customers: leads linked to a
  paid subscription (by the checkout's lead id, or by the same email address), where paid means
  paid at least once (`last_paid_at` set, so also past_due or canceled after paying) or active or
  past_due now; trials and checkouts never paid do not count;
- runs per day: by the UTC day a run was queued; error rate = failed / finished, where finished means
  succeeded or failed (cancelled runs never produced a result, queued and running ones have not yet).

Every total is exact and read from an index where PostgreSQL can (users, leads, runs per day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from fractions import Fraction

from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.admin.billing.service import Revenue, monthly_recurring_revenue

WINDOW_DAYS = 30


def ratio(part: int, whole: int) -> Fraction | None:
    return Fraction(part, whole) if whole else None


def percent(value: Fraction | None) -> str:
    """`12.5%`, or an em dash when there is nothing to divide by."""
    if value is None:
        return "—"
    return f"{float(value * 100):.1f}%"


@dataclass(frozen=True)
class Totals:
    users: int
    active_users: int
    organizations: int
    active_organizations: int
    suspended_organizations: int
    leads: int
    won_leads: int
    converted_leads: int

    @property
    def lead_conversion(self) -> Fraction | None:
        return ratio(self.won_leads, self.leads)

    @property
    def subscription_conversion(self) -> Fraction | None:
        return ratio(self.converted_leads, self.leads)


@dataclass(frozen=True)
class RunDay:
    day: date
    queued: int
    succeeded: int
    failed: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def error_rate(self) -> Fraction | None:
        return ratio(self.failed, self.finished)


@dataclass(frozen=True)
class DayCount:
    day: date
    count: int


@dataclass(frozen=True)
class Dashboard:
    totals: Totals
    mrr: Revenue
    runs: list[RunDay]
    signups: list[DayCount]
    new_leads: list[DayCount]

    @property
    def first_day(self) -> date:
        """The window's first UTC day (it starts at that day's UTC midnight)."""
        return self.runs[0].day

    @property
    def runs_in_window(self) -> int:
        return sum(day.queued for day in self.runs)

    @property
    def failed_in_window(self) -> int:
        return sum(day.failed for day in self.runs)

    @property
    def finished_in_window(self) -> int:
        return sum(day.finished for day in self.runs)

    @property
    def error_rate(self) -> Fraction | None:
        return ratio(self.failed_in_window, self.finished_in_window)


# The window's first day (UTC), shared by every windowed figure; it starts at that day's UTC midnight.
BOUNDS_CTE = "bounds AS (SELECT (now() AT TIME ZONE 'UTC')::date - (:days - 1) AS first_day)"
# Subscriptions that paid, as the module docstring defines it.
PAID_CTE = """
    paid AS (
      SELECT lead_id, customer_email FROM subscriptions
      WHERE last_paid_at IS NOT NULL OR status IN ('active', 'past_due')
    )
"""

TOTALS_SQL = text("WITH " + BOUNDS_CTE + "," + PAID_CTE + """
    , all_users AS (SELECT count(*) AS n FROM users)
    SELECT
      (SELECT n FROM all_users),
      -- active = all - inactive: both counts come from indexes (the inactive ones from a small one)
      (SELECT n FROM all_users) - (SELECT count(*) FROM users WHERE NOT is_active),
      (SELECT count(*) FROM organizations),
      (SELECT count(*) FROM organizations o, bounds WHERE EXISTS (
          SELECT 1 FROM workflow_runs r
          WHERE r.org_id = o.id AND r.trigger <> 'test'  -- a builder's test run is not usage
            AND r.queued_at >= first_day::timestamp AT TIME ZONE 'UTC')),
      (SELECT count(*) FROM organizations WHERE status = 'suspended'),
      (SELECT count(*) FROM leads),
      (SELECT count(*) FROM leads WHERE status = 'won'),
      (SELECT count(*) FROM (
          SELECT lead_id FROM paid WHERE lead_id IS NOT NULL
          UNION
          SELECT l.id FROM paid JOIN leads l ON l.email = paid.customer_email::citext
      ) AS converted)
    """)  # noqa: S608 - constants only

# The window's days in UTC, oldest first.
DAYS_CTE = "WITH " + BOUNDS_CTE + """,
    days AS (
      SELECT generate_series(first_day::timestamp, (first_day + (:days - 1))::timestamp, interval '1 day')::date AS day
      FROM bounds
    )
"""  # noqa: S608 - constants only

RUNS_SQL = text(DAYS_CTE + """
    , runs AS (
      SELECT (queued_at AT TIME ZONE 'UTC')::date AS day,
             count(*) AS queued,
             count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
             count(*) FILTER (WHERE status = 'failed') AS failed
      FROM workflow_runs, bounds
      WHERE queued_at >= first_day::timestamp AT TIME ZONE 'UTC' AND trigger <> 'test'
      GROUP BY 1
    )
    SELECT days.day, coalesce(queued, 0), coalesce(succeeded, 0), coalesce(failed, 0)
    FROM days LEFT JOIN runs USING (day) ORDER BY days.day
    """)  # noqa: S608 - constants only


PER_DAY_SQL = """
    , created AS (
      SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS count
      FROM {table}, bounds
      WHERE created_at >= first_day::timestamp AT TIME ZONE 'UTC'
      GROUP BY 1
    )
    SELECT days.day, coalesce(count, 0) FROM days LEFT JOIN created USING (day) ORDER BY days.day
"""


def _per_day_sql(table: str) -> text:
    # `table` is one of two constants below, never input.
    return text(DAYS_CTE + PER_DAY_SQL.format(table=table))


SIGNUPS_SQL = _per_day_sql("users")
NEW_LEADS_SQL = _per_day_sql("leads")


def totals(session: Session, days: int = WINDOW_DAYS) -> Totals:
    return Totals(*session.execute(TOTALS_SQL, {"days": days}).one())


def runs_per_day(session: Session, days: int = WINDOW_DAYS) -> list[RunDay]:
    return [RunDay(*row) for row in session.execute(RUNS_SQL, {"days": days})]


def dashboard(session: Session, days: int = WINDOW_DAYS) -> Dashboard:
    """Every figure of the dashboard."""
    return Dashboard(
        totals=totals(session, days),
        mrr=monthly_recurring_revenue(session),
        runs=runs_per_day(session, days),
        signups=[DayCount(*row) for row in session.execute(SIGNUPS_SQL, {"days": days})],
        new_leads=[DayCount(*row) for row in session.execute(NEW_LEADS_SQL, {"days": days})],
    )
