"""Billing oversight pages: MRR, subscriptions by status, failing payments. Read-only."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from flask import Blueprint, abort, render_template, request
from sqlalchemy import select

from nectar.admin.billing import service
from nectar.admin.listing import paginate, read_page, read_text
from nectar.core.contract.plans import month_after
from nectar.schema.models import Organization, Subscription
from nectar.shared.database import db

billing = Blueprint("billing", __name__, url_prefix="/billing")
PER_PAGE = 50
RECENT_FAILURES = 10


@billing.get("/")
def index():
    counts = service.status_counts(db.session)
    status = request.args.get("status", "")
    if status and status not in counts:
        abort(400, f"There is no subscription status {status!r}.")
    search = read_text(request.args, "q")
    page = paginate(service.subscriptions_statement(status, search), read_page(request.args), PER_PAGE)
    recent = db.session.scalars(service.failed_payments_statement().limit(RECENT_FAILURES)).all()
    return render_template(
        "admin/billing/index.html",
        mrr=service.monthly_recurring_revenue(db.session),
        trial=service.trial_revenue(db.session),
        mrr_statuses=service.MRR_STATUSES,
        counts=counts,
        status=status,
        search=search,
        page=page,
        failing=service.failing_subscriptions(db.session),
        failed_payments=[service.failed_payment(event) for event in recent],
        stuck_events=service.stuck_events(db.session),
        stuck_provisioning=service.stuck_provisioning(db.session),
        refused_usage=service.refused_usage_reports(db.session),
    )


@billing.get("/usage")
def usage():
    """The organizations that used the most in a month (?month=YYYY-MM, this one by default)."""
    today = datetime.now(UTC).date()
    month = request.args.get("month", f"{today:%Y-%m}")
    try:
        first = date.fromisoformat(f"{month}-01")
        following = month_after(first)
    except (ValueError, OverflowError):
        abort(400, "month is a month: YYYY-MM.")
    consumers, total = service.top_consumers(db.session, first, following - timedelta(days=1))
    return render_template("admin/billing/usage.html", month=first, consumers=consumers, total=total)


@billing.get("/failed-payments")
def failed_payments():
    page = paginate(service.failed_payments_statement(), read_page(request.args), PER_PAGE)
    return render_template(
        "admin/billing/failed_payments.html",
        page=page,
        payments=[service.failed_payment(event) for event in page.items],
    )


@billing.get("/subscriptions/<uuid:subscription_id>")
def subscription(subscription_id: uuid.UUID):
    row = db.session.execute(
        select(Subscription, Organization.name)
        .outerjoin(Organization, Organization.id == Subscription.organization_id)
        .where(Subscription.id == subscription_id)
    ).one_or_none()
    if row is None:
        abort(404, "There is no such subscription.")
    item, org_name = row
    return render_template(
        "admin/billing/subscription.html",
        item=item,
        org_name=org_name,
        monthly=service.monthly_amount(item),
        mrr_statuses=service.MRR_STATUSES,
    )
