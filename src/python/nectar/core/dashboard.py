"""Each organization's home: its own counts, read under its tenant scope in one query."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import text
from sqlalchemy.orm import Session

from nectar.core.access import current_org, org_required
from nectar.core.contract.plans import plan_of
from nectar.core.usage import daily_usage, month_so_far, runs_per_day
from nectar.shared.database import db

dashboard = Blueprint("dashboard", __name__)


@dataclass(frozen=True)
class OrgCounts:
    members: int
    services: int
    endpoints: int
    workflows: int
    runs_this_week: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def org_counts(session: Session) -> OrgCounts:
    """Counts for the organization the session is scoped to (row-level security picks the rows)."""
    row = session.execute(
        text(
            "SELECT (SELECT count(*) FROM memberships), (SELECT count(*) FROM integration_connections), "
            "(SELECT count(*) FROM endpoints), (SELECT count(*) FROM workflows), "
            "(SELECT count(*) FROM workflow_runs WHERE queued_at >= now() - interval '7 days' "
            "AND trigger <> 'test')"
        )
    ).one()
    return OrgCounts(*row)


@dashboard.get("/")
def landing():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.home"))
    return render_template("core/home.html")


@dashboard.get("/dashboard")
@org_required()
def home():
    first, today = month_so_far(datetime.now(UTC).date())
    days, month = daily_usage(db.session, first, today)
    ctx = current_org()
    return render_template(
        "core/dashboard.html",
        ctx=ctx,
        counts=org_counts(db.session),
        month=month.as_dict(),
        plan=plan_of(ctx.org.plan),
        bars=runs_per_day(days, first, today),
    )
