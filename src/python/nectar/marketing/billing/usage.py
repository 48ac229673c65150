"""Reporting paid plans' usage to the payment provider's meter, one UTC day at a time.

Every organization with a paid subscription (active, trialing or past due) has each of its days
reported once the day is over, and an hour more for runs still ending at midnight: its runs that
day, as core's database counted them (usage_daily). The report is recorded (usage_reports) right
after the provider's answer; the provider keeps one event per identifier (organization, day and
meter), so a crash between the two, or a retry, never bills twice, and a day recorded is never
sent again. A refusal is recorded and shown to staff; anything else is retried, with backoff, by
the job. A day without runs is recorded without a call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.marketing.billing.stripe_api import MeterEventRefused

if TYPE_CHECKING:
    from nectar.marketing.billing.backends import BillingBackend

BILLED_STATUSES = ("active", "trialing", "past_due")
SETTLE_AFTER = timedelta(hours=1)
LOOKBACK_DAYS = 34  # Stripe takes meter events up to 35 days old
BATCH = 500


@dataclass(frozen=True)
class UsageToReport:
    organization_id: uuid.UUID
    day: date
    meter: str
    value: int
    stripe_customer_id: str

    @property
    def identifier(self) -> str:
        """The same for every try of this organization, day and meter; unlike any other's."""
        return f"nectar-{uuid.uuid5(self.organization_id, f'{self.day.isoformat()}/{self.meter}')}"

    @property
    def timestamp(self) -> int:
        """The day's last second: the event belongs to that day's usage."""
        return int(datetime.combine(self.day, time(23, 59, 59), UTC).timestamp())


# Each billed organization's days since its subscription began, not reported yet, with its runs.
_DUE = text("""
    SELECT s.organization_id, d.day::date, s.stripe_customer_id,
           (SELECT coalesce(sum(u.runs), 0) FROM usage_daily u WHERE u.org_id = s.organization_id AND u.day = d.day)
    FROM (
        SELECT DISTINCT ON (organization_id) organization_id, stripe_customer_id, created_at
        FROM subscriptions WHERE organization_id IS NOT NULL AND status = ANY(:billed)
        ORDER BY organization_id, created_at DESC
    ) AS s
    CROSS JOIN LATERAL generate_series(
        GREATEST(CAST(:first AS date), (s.created_at AT TIME ZONE 'UTC')::date), CAST(:last AS date), interval '1 day'
    ) AS d(day)
    WHERE NOT EXISTS (
        SELECT FROM usage_reports r WHERE r.organization_id = s.organization_id AND r.day = d.day::date AND r.meter = :meter
    )
    ORDER BY d.day, s.organization_id
    LIMIT :batch
    """)
_RECORD = text(
    "INSERT INTO usage_reports (organization_id, day, meter, value, identifier, stripe_customer_id, mode, status, error) "
    "VALUES (:organization_id, :day, :meter, :value, :identifier, :customer, :mode, :status, :error) "
    "ON CONFLICT DO NOTHING"
)


def report_due_usage(session: Session, backend: BillingBackend, meter: str, now: datetime) -> dict[str, int]:
    """Reports every day that is due (see the module's docstring); returns how many were reported,
    recorded without a call (no runs), and refused. Raises what a retry may cure, keeping what
    was reported before."""
    last = (now - SETTLE_AFTER).date() - timedelta(days=1)
    first = now.date() - timedelta(days=LOOKBACK_DAYS)
    counts = {"reported": 0, "empty": 0, "refused": 0}
    while True:
        due = session.execute(
            _DUE,
            {"billed": list(BILLED_STATUSES), "first": first, "last": last, "meter": meter, "batch": BATCH},
        ).all()
        session.rollback()  # no transaction held open across the provider's answers
        for organization_id, day, customer, runs in due:
            report = UsageToReport(organization_id, day, meter, int(runs), customer)
            mode, status, error = "none", "reported", None
            if report.value > 0:
                try:
                    mode = backend.report_usage(report)
                except MeterEventRefused as refused:
                    mode, status, error = backend.mode.value, "refused", str(refused)[:2000]
            counts["refused" if error else "reported" if report.value else "empty"] += 1
            session.execute(
                _RECORD,
                {
                    "organization_id": organization_id,
                    "day": day,
                    "meter": meter,
                    "value": report.value,
                    "identifier": report.identifier,
                    "customer": customer,
                    "mode": mode,
                    "status": status,
                    "error": error,
                },
            )
            session.commit()
        if len(due) < BATCH:
            return counts
