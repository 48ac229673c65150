"""Billing oversight: the subscriptions marketing mirrors from Stripe, monthly recurring revenue
computed from those rows, and failed payments. Read-only: Stripe is the source of truth.

MRR follows Stripe's own dashboard: subscriptions that are `active` or `past_due` (still billed while
Stripe retries the card) count; `trialing` ones are not revenue yet and are shown apart. Each row
contributes unit_amount x quantity per billing period of `interval_count` intervals, turned into a
month: year / 12, week x 52 / 12, day x 365 / 12, divided by interval_count. Sums stay exact (annual totals in integers, divided by 12 once) and per currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from sqlalchemy import Select, and_, func, or_, select, text
from sqlalchemy.orm import Session

from nectar.admin.listing import like_pattern
from nectar.schema.models import Organization, StripeEvent, Subscription, UsageReport

MRR_STATUSES = ("active", "past_due")
TRIAL_STATUSES = ("trialing",)
FAILING_STATUSES = ("past_due", "unpaid")
# Stripe's subscription statuses, in the order a person reads them.
STATUSES = (
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "incomplete",
    "incomplete_expired",
    "paused",
    "canceled",
)
# How many of each interval make a year; a year is 12 months.
PER_YEAR = {"day": 365, "week": 52, "month": 12, "year": 1}
# Currencies Stripe counts in whole units (no cents).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())


def money(minor_units: Fraction | Decimal | int, currency: str) -> str:
    """An amount in a currency's smallest unit as people read it: `1,234.50 USD`, `1,200 JPY`."""
    places = 0 if currency.lower() in ZERO_DECIMAL else 2
    value = Decimal(Fraction(minor_units).numerator) / Decimal(Fraction(minor_units).denominator)
    major = (value / (10**places)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{major:,} {currency.upper()}"


def _annual_sql(statuses: tuple[str, ...]) -> str:
    cases = " ".join(f"WHEN '{interval}' THEN {count}" for interval, count in PER_YEAR.items())
    listed = ", ".join(f"'{status}'" for status in statuses)
    # Built from the constants above only.
    return (
        f"SELECT currency, interval_count, sum(unit_amount::numeric * quantity * CASE interval {cases} END), "  # noqa: S608
        f"count(*) FROM subscriptions WHERE status IN ({listed}) "
        "GROUP BY currency, interval_count ORDER BY currency"
    )


@dataclass(frozen=True)
class Revenue:
    """Monthly amounts per currency, in the smallest unit (exact fractions), and how many rows."""

    monthly: dict[str, Fraction]
    subscriptions: int


def _revenue(session: Session, statuses: tuple[str, ...]) -> Revenue:
    monthly: dict[str, Fraction] = {}
    rows = 0
    for currency, interval_count, annual, count in session.execute(text(_annual_sql(statuses))):
        # Intervals Stripe does not have (none today) give NULL and are left out, not guessed.
        if annual is not None:
            key = currency.lower()
            monthly[key] = monthly.get(key, Fraction(0)) + Fraction(annual) / (12 * interval_count)
            rows += count
    return Revenue(monthly, rows)


def monthly_recurring_revenue(session: Session) -> Revenue:
    """MRR per currency from active and past_due subscriptions (see the module docstring)."""
    return _revenue(session, MRR_STATUSES)


def trial_revenue(session: Session) -> Revenue:
    """What trialing subscriptions will add to MRR once they convert."""
    return _revenue(session, TRIAL_STATUSES)


def monthly_amount(subscription: Subscription) -> Fraction | None:
    """One subscription's amount per month in the smallest currency unit (None: unknown interval)."""
    per_year = PER_YEAR.get(subscription.interval)
    if per_year is None:
        return None
    return Fraction(
        subscription.unit_amount * subscription.quantity * per_year, 12 * subscription.interval_count
    )


def status_counts(session: Session) -> dict[str, int]:
    """Subscriptions per status, every known status listed (zero included), unknown ones appended."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in session.execute(
        select(Subscription.status, func.count()).group_by(Subscription.status)
    ):
        counts[status] = count
    return counts


def subscriptions_statement(status: str | None = None, search: str | None = None) -> Select:
    """Subscriptions (with their organization's name) newest first, optionally by status or search
    text matched against the customer's email and the Stripe ids."""
    statement = (
        select(Subscription, Organization.name)
        .outerjoin(Organization, Organization.id == Subscription.organization_id)
        .order_by(Subscription.created_at.desc(), Subscription.id.desc())
    )
    if status:
        statement = statement.where(Subscription.status == status)
    if search:
        pattern = like_pattern(search)
        statement = statement.where(
            or_(
                Subscription.customer_email.ilike(pattern, escape="\\"),
                Subscription.stripe_subscription_id == search,
                Subscription.stripe_customer_id == search,
                Subscription.stripe_price_id == search,
            )
        )
    return statement


def failing_subscriptions(session: Session, limit: int = 100) -> list[tuple[Subscription, str | None]]:
    """Subscriptions whose payments are failing: past_due or unpaid, or whose newest invoice event
    is a failed one. The longest-failing first."""
    failing = or_(
        Subscription.status.in_(FAILING_STATUSES),
        and_(
            Subscription.last_payment_failed_at.is_not(None),
            or_(
                Subscription.last_paid_at.is_(None),
                Subscription.last_payment_failed_at > Subscription.last_paid_at,
            ),
        ),
    )
    return list(
        session.execute(
            select(Subscription, Organization.name)
            .outerjoin(Organization, Organization.id == Subscription.organization_id)
            .where(failing, Subscription.status != "canceled")
            .order_by(Subscription.last_payment_failed_at.asc().nulls_last(), Subscription.updated_at)
            .limit(limit)
        ).all()
    )


@dataclass(frozen=True)
class FailedPayment:
    """One `invoice.payment_failed` event, with the invoice fields staff need."""

    event_id: str
    at: datetime
    invoice_id: str | None
    customer_id: str | None
    subscription_id: str | None
    customer_email: str | None
    amount_due: int | None
    currency: str | None
    attempt_count: int | None
    next_attempt_at: datetime | None
    processed: bool

    @property
    def amount(self) -> str:
        if self.amount_due is None or not self.currency:
            return "?"
        return money(self.amount_due, self.currency)


def _epoch(value) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None


def _stripe_id(value) -> str | None:
    # Stripe sends ids, or whole objects when the event expanded them.
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


# Marketing's worker retries these for ever with a capped backoff; past this age a person should look.
STUCK_AFTER = timedelta(minutes=5)


def stuck_events(session: Session, limit: int = 50) -> list[StripeEvent]:
    """Stripe events received more than STUCK_AFTER ago and still not processed, oldest first (the
    partial index on unprocessed events keeps this cheap however many events there are)."""
    return session.scalars(
        select(StripeEvent)
        .where(StripeEvent.processed_at.is_(None), StripeEvent.received_at < func.now() - STUCK_AFTER)
        .order_by(StripeEvent.received_at)
        .limit(limit)
    ).all()


def refused_usage_reports(session: Session, limit: int = 50) -> list[tuple[UsageReport, str | None]]:
    """Usage the payment provider refused to record (a customer gone from Stripe, a meter missing),
    newest day first, with the organization's name: that usage is not billed until someone acts."""
    return session.execute(
        select(UsageReport, Organization.name)
        .outerjoin(Organization, Organization.id == UsageReport.organization_id)
        .where(UsageReport.status == "refused")
        .order_by(UsageReport.day.desc(), UsageReport.organization_id)
        .limit(limit)
    ).all()


def stuck_provisioning(session: Session, limit: int = 50) -> list[Subscription]:
    """Paid checkouts whose organization core has not made yet (pending past STUCK_AFTER), or that
    core refused: the buyer is waiting."""
    return session.scalars(
        select(Subscription)
        .where(
            or_(
                Subscription.provisioning_status == "refused",
                and_(
                    Subscription.provisioning_status == "pending",
                    Subscription.updated_at < func.now() - STUCK_AFTER,
                ),
            )
        )
        .order_by(Subscription.created_at)
        .limit(limit)
    ).all()


def failed_payments_statement() -> Select:
    return (
        select(StripeEvent)
        .where(StripeEvent.type == "invoice.payment_failed")
        .order_by(StripeEvent.stripe_created.desc(), StripeEvent.id)
    )


def failed_payment(event: StripeEvent) -> FailedPayment:
    invoice = ((event.payload or {}).get("data") or {}).get("object") or {}
    amount = invoice.get("amount_due")
    attempts = invoice.get("attempt_count")
    return FailedPayment(
        event_id=event.id,
        at=datetime.fromtimestamp(event.stripe_created, UTC),
        invoice_id=_stripe_id(invoice.get("id")),
        customer_id=_stripe_id(invoice.get("customer")),
        subscription_id=_stripe_id(invoice.get("subscription"))
        or _stripe_id(((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")),
        customer_email=(
            invoice.get("customer_email") if isinstance(invoice.get("customer_email"), str) else None
        ),
        amount_due=amount if isinstance(amount, int) else None,
        currency=invoice.get("currency") if isinstance(invoice.get("currency"), str) else None,
        attempt_count=attempts if isinstance(attempts, int) else None,
        next_attempt_at=_epoch(invoice.get("next_payment_attempt")),
        processed=event.processed_at is not None,
    )


@dataclass(frozen=True)
class Consumer:
    """One organization's usage over a period, as usage_daily counted it."""

    org_id: object
    name: str
    plan: str
    runs: int
    endpoint_calls: int
    steps: int
    http_calls: int
    run_seconds: float


def top_consumers(session: Session, first, last, limit: int = 50) -> tuple[list[Consumer], Consumer]:
    """The organizations that ran the most from `first` to `last` (UTC days), and every
    organization's total (name "All organizations")."""
    sums = (
        "sum(u.runs), coalesce(sum(u.runs) FILTER (WHERE u.trigger = 'http'), 0), sum(u.steps), "
        "sum(u.http_calls), sum(u.run_ms) / 1000.0"
    )
    period = {"first": first, "last": last}
    rows = session.execute(
        text(
            f"SELECT o.id, o.name, o.plan, {sums} FROM usage_daily u JOIN organizations o ON o.id = u.org_id "  # noqa: S608
            "WHERE u.day BETWEEN :first AND :last GROUP BY o.id ORDER BY sum(u.runs) DESC, o.name LIMIT :limit"
        ),
        {**period, "limit": limit},
    ).all()
    total = session.execute(
        text(f"SELECT {sums} FROM usage_daily u WHERE u.day BETWEEN :first AND :last"), period  # noqa: S608
    ).one()
    consumers = [Consumer(*row[:3], *(_number(value) for value in row[3:])) for row in rows]
    return consumers, Consumer(None, "All organizations", "", *(_number(value) for value in total))


def _number(value):
    if value is None:
        return 0
    return float(value) if isinstance(value, Decimal) and value % 1 else int(value)
