"""Exact numbers across tenants: known data in four organizations (users, memberships, leads, subscriptions
in several intervals, statuses and currencies, workflow runs over several days, failed payments, outbox
mail), then every dashboard figure, chart bar and list count is compared with the truth worked out
here from the seed, not with admin's own functions.

This module gets a database of its own, so the totals are exactly what it seeded, whatever other
test modules in the same process store.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pytest

from nectar.schema.migrate import upgrade
from nectar.shared.config import Role, Service, load_settings
from tests.conftest import DatabaseUnderTest

NOW = datetime.now(UTC)
# The dashboard's window: the last 30 UTC days, from UTC midnight of the first.
WINDOW_START = NOW.date() - timedelta(days=29)
WINDOW_START_AT = datetime.combine(WINDOW_START, time.min, tzinfo=UTC)


def ago(days: int, minutes: int = 5) -> datetime:
    return NOW - timedelta(days=days, minutes=minutes)


@pytest.fixture(scope="module")
def database(pg_server):
    name = f"nectar_test_numbers_{os.getpid()}"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    own = DatabaseUnderTest(pg_server, name)
    upgrade(own.url(Role.OWNER))
    yield own
    pg_server.drop_database(name)


@pytest.fixture(scope="module")
def settings_for(database):
    def settings(service: Service, **extra: str):
        return load_settings(service, database.environ(**extra))

    return settings


# The seed ----------------------------------------------------------------------------------------

ORGS = {"acme": "active", "beta": "active", "gamma": "suspended", "delta": "active"}


@dataclass(frozen=True)
class SeedUser:
    email: str
    active: bool
    days_ago: int
    memberships: tuple[tuple[str, str], ...]


USERS = [
    SeedUser("u0@example.com", True, 0, (("acme", "owner"), ("beta", "member"))),
    SeedUser("u1@example.com", True, 0, (("acme", "member"),)),
    SeedUser("u2@example.com", True, 1, (("beta", "owner"),)),
    SeedUser("u3@example.com", True, 5, (("gamma", "owner"),)),
    SeedUser("u4@example.com", True, 12, (("delta", "owner"),)),
    SeedUser("u5@example.com", False, 29, (("delta", "admin"),)),
    SeedUser("u6@example.com", False, 45, ()),
]


@dataclass(frozen=True)
class SeedLead:
    email: str
    stage: str
    source: str | None
    days_ago: int


LEADS = [
    SeedLead("l0@example.com", "new", "pricing", 0),
    SeedLead("l1@example.com", "new", "blog", 1),
    SeedLead("l2@example.com", "contacted", "pricing", 2),
    SeedLead("l3@example.com", "qualified", "ads", 3),
    SeedLead("l4@example.com", "won", "pricing", 3),
    SeedLead("l5@example.com", "won", "blog", 10),
    SeedLead("l6@example.com", "won", None, 40),
    SeedLead("l7@example.com", "lost", "ads", 5),
    SeedLead("l8@example.com", "new", "contact", 29),
    SeedLead("l9@example.com", "contacted", "pricing", 31),
]


@dataclass(frozen=True)
class SeedSubscription:
    stripe_id: str
    status: str
    interval: str
    unit_amount: int
    quantity: int
    currency: str
    org: str | None = None
    lead: int | None = None  # index into LEADS: linked by the checkout
    customer_email: str | None = None
    last_paid_days_ago: int | None = None
    last_failed_days_ago: int | None = None
    interval_count: int = 1


SUBSCRIPTIONS = [
    SeedSubscription(
        "sub_a1",
        "active",
        "month",
        2900,
        1,
        "usd",
        "acme",
        lead=4,
        last_paid_days_ago=2,
        last_failed_days_ago=1,
    ),
    SeedSubscription(
        "sub_a2",
        "active",
        "year",
        29000,
        3,
        "usd",
        "acme",
        lead=5,
        last_paid_days_ago=5,
        last_failed_days_ago=10,
    ),
    SeedSubscription("sub_b1", "past_due", "week", 1000, 2, "usd", "beta", last_failed_days_ago=3),
    SeedSubscription("sub_b2", "active", "day", 100, 1, "usd", "beta"),
    SeedSubscription("sub_d1", "active", "month", 4900, 2, "eur", "delta", customer_email="L2@Example.com"),
    SeedSubscription("sub_d2", "trialing", "year", 9999, 1, "eur", "delta", lead=3),  # a trial: not paid
    SeedSubscription("sub_q1", "active", "month", 15000, 1, "eur", "delta", interval_count=3),  # quarterly
    SeedSubscription(
        "sub_x1",
        "canceled",
        "month",
        5000,
        1,
        "usd",
        None,
        lead=0,
        last_paid_days_ago=20,
        last_failed_days_ago=1,
    ),  # canceled after paying: a customer
    SeedSubscription("sub_x3", "canceled", "month", 5000, 1, "usd", None, lead=1),  # canceled, never paid
    SeedSubscription("sub_x2", "unpaid", "month", 7000, 1, "usd", "gamma", last_failed_days_ago=8),
    SeedSubscription("sub_j1", "active", "month", 3000, 1, "jpy", None, customer_email="l7@example.com"),
    SeedSubscription("sub_g1", "incomplete", "week", 999, 1, "gbp", None),
]

# (organization, days ago, status, how many)
RUNS = [
    ("acme", 0, "succeeded", 3), ("acme", 0, "failed", 1), ("acme", 0, "running", 1),
    ("acme", 1, "succeeded", 2), ("acme", 1, "failed", 2),
    ("acme", 2, "queued", 1),
    ("acme", 5, "succeeded", 4),
    ("acme", 7, "failed", 1), ("acme", 7, "cancelled", 1),
    ("acme", 15, "succeeded", 1), ("acme", 15, "failed", 1),
    ("delta", 29, "succeeded", 1), ("delta", 29, "failed", 1),
    ("beta", 31, "failed", 2),
    ("beta", 40, "succeeded", 1),
]  # fmt: skip
# (organization, when, status): gamma ran one minute before the window starts, which is still within
# 30 times 24 hours of now (except in a day's last minute) but not within the window.
EDGE_RUNS = [("gamma", WINDOW_START_AT - timedelta(minutes=1), "succeeded")]

OUTBOX = {"pending": 2, "sending": 1, "sent": 3, "failed": 2}


@pytest.fixture(scope="module")
def seeded(database):
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        orgs = {}
        for name, status in ORGS.items():
            orgs[name] = conn.execute(
                "INSERT INTO organizations (name, slug, status) VALUES (%s, %s, %s) RETURNING id",
                (name.title(), name, status),
            ).fetchone()[0]
        for user in USERS:
            user_id = conn.execute(
                "INSERT INTO users (email, is_active, created_at) VALUES (%s, %s, %s) RETURNING id",
                (user.email, user.active, ago(user.days_ago)),
            ).fetchone()[0]
            for org, role in user.memberships:
                conn.execute(
                    "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, %s)",
                    (orgs[org], user_id, role),
                )
        leads = []
        for lead in LEADS:
            leads.append(
                conn.execute(
                    "INSERT INTO leads (email, status, source, created_at) VALUES (%s, %s, %s, %s) RETURNING id",
                    (lead.email, lead.stage, lead.source, ago(lead.days_ago)),
                ).fetchone()[0]
            )
        for sub in SUBSCRIPTIONS:
            conn.execute(
                "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, stripe_price_id, organization_id, "
                "lead_id, customer_email, plan, status, quantity, unit_amount, currency, interval, interval_count, "
                "last_paid_at, last_payment_failed_at) VALUES (%s, %s, %s, %s, %s, %s, 'pro', %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    sub.stripe_id,
                    sub.stripe_id.replace("sub_", "cus_"),
                    sub.stripe_id.replace("sub_", "price_"),
                    orgs.get(sub.org),
                    leads[sub.lead] if sub.lead is not None else None,
                    sub.customer_email,
                    sub.status,
                    sub.quantity,
                    sub.unit_amount,
                    sub.currency,
                    sub.interval,
                    sub.interval_count,
                    ago(sub.last_paid_days_ago) if sub.last_paid_days_ago is not None else None,
                    ago(sub.last_failed_days_ago) if sub.last_failed_days_ago is not None else None,
                ),
            )
        for number, (event_type, subscription, amount) in enumerate(
            [
                ("invoice.payment_failed", "sub_b1", 2000),
                ("invoice.payment_failed", "sub_x2", 7000),
                ("invoice.paid", "sub_a1", 2900),
            ]
        ):
            invoice = {"id": f"in_{number}", "customer": subscription.replace("sub_", "cus_"), "subscription": subscription,
                       "amount_due": amount, "currency": "usd", "attempt_count": 2}  # fmt: skip
            conn.execute(
                "INSERT INTO stripe_events (id, type, payload, stripe_created) VALUES (%s, %s, %s, %s)",
                (
                    f"evt_{number}",
                    event_type,
                    json.dumps({"data": {"object": invoice}}),
                    int(ago(number).timestamp()),
                ),
            )
        workflows = {}
        for name in ORGS:
            workflow = conn.execute(
                "INSERT INTO workflows (org_id, name) VALUES (%s, 'w') RETURNING id", (orgs[name],)
            ).fetchone()[0]
            version = conn.execute(
                "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) VALUES (%s, %s, 1, '{}') RETURNING id",
                (orgs[name], workflow),
            ).fetchone()[0]
            workflows[name] = (workflow, version)
        runs = [(org, ago(days), status) for org, days, status, count in RUNS for _ in range(count)]
        for org, queued_at, status in runs + EDGE_RUNS:
            conn.execute(
                "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger, status, queued_at) "
                "VALUES (%s, %s, %s, 'manual', %s, %s)",
                (orgs[org], *workflows[org], status, queued_at),
            )
        for status, count in OUTBOX.items():
            for n in range(count):
                conn.execute(
                    "INSERT INTO email_outbox (to_address, subject, body_text, category, status) VALUES (%s, 's', 'b', 'test', %s)",
                    (f"{status}{n}@example.com", status),
                )
    return leads


# Reading the pages ---------------------------------------------------------------------------------


def figure(page: str, name: str) -> list[str]:
    return re.findall(rf'data-figure="{name}"[^>]*>([^<]*)<', page)


def tab_counts(page: str, attribute: str) -> dict[str, int]:
    return {
        name: int(count.replace(",", ""))
        for name, count in re.findall(
            rf'{attribute}="([a-z_]+)"[^>]*>[^<]*<span class="count">([\d,]+)</span>', page
        )
    }


@pytest.fixture(scope="module")
def pages(seeded, admin_app, staff_member):
    from tests.admin.conftest import StaffBrowser

    email, password, secret = staff_member("superadmin")
    browser = StaffBrowser(admin_app, token_page="/login")
    assert browser.sign_in(email, password, secret).status_code == 302
    fetched = {}
    for path in ("/", "/billing/", "/billing/?status=active", "/billing/failed-payments", "/leads/",
                 "/leads/?source=pricing", "/leads/board", "/outbox/", "/outbox/?status=failed"):  # fmt: skip
        response = browser.get(path)
        assert response.status_code == 200, path
        fetched[path] = response.get_data(as_text=True)
    return fetched


# The truth, from the seed --------------------------------------------------------------------------


def in_window(days: int) -> bool:
    return ago(days).date() >= WINDOW_START


def test_people_and_organizations(pages):
    page = pages["/"]
    assert figure(page, "users") == [str(len(USERS))] == ["7"]
    assert "5 active" in page  # u5 and u6 are deactivated
    assert figure(page, "organizations") == ["4"]
    assert "1 suspended" in page
    # acme ran today, delta 29 days ago; beta's last run is 31 days old; gamma's one minute before
    # the window (the same window as the runs figures) began.
    run_times = [(org, ago(days)) for org, days, _, _ in RUNS] + [(org, at) for org, at, _ in EDGE_RUNS]
    active = {org for org, at in run_times if at >= WINDOW_START_AT}
    assert active == {"acme", "delta"}
    assert figure(page, "active_organizations") == [str(len(active))]


def test_leads_and_conversion(pages):
    page = pages["/"]
    won = sum(1 for lead in LEADS if lead.stage == "won")
    assert figure(page, "leads") == [str(len(LEADS))] == ["10"]
    assert f"{won} won" in page
    assert figure(page, "lead_conversion") == [f"{won / len(LEADS) * 100:.1f}%"] == ["30.0%"]

    # Only paid subscriptions make a customer: paid at least once, or active or past_due now.
    def paid(sub: SeedSubscription) -> bool:
        return sub.last_paid_days_ago is not None or sub.status in ("active", "past_due")

    linked = {sub.lead for sub in SUBSCRIPTIONS if paid(sub) and sub.lead is not None}
    emails = {sub.customer_email.lower() for sub in SUBSCRIPTIONS if paid(sub) and sub.customer_email}
    converted = linked | {i for i, lead in enumerate(LEADS) if lead.email in emails}
    # By checkout link: l4, l5 (active), l0 (canceled after paying). By email, whatever its case: l2, l7.
    # Not l3 (a trial) nor l1 (canceled, never paid).
    assert converted == {0, 2, 4, 5, 7}
    assert (
        figure(page, "subscription_conversion") == [f"{len(converted) / len(LEADS) * 100:.1f}%"] == ["50.0%"]
    )
    assert f"{len(converted)} with a paid subscription" in page


def test_monthly_recurring_revenue(pages):
    # Active and past_due only. USD per month, in cents:
    #   sub_a1 2900 x 1 monthly = 2900; sub_a2 29000 x 3 yearly / 12 = 7250;
    #   sub_b1 1000 x 2 weekly x 52 / 12 = 8666.67; sub_b2 100 daily x 365 / 12 = 3041.67
    #   = 21858.33 cents = 218.58 USD. EUR: sub_d1 4900 x 2 = 98.00, sub_q1 15000 every 3 months = 50.00
    #   (sub_d2 is trialing).
    #   JPY has no minor unit: 3,000. Canceled, unpaid and incomplete ones count for nothing.
    expected = ["148.00 EUR", "3,000 JPY", "218.58 USD"]
    assert figure(pages["/"], "mrr") == expected
    billing = pages["/billing/"]
    mrr_card = billing[billing.index('id="mrr"') : billing.index('id="trial-mrr"')]
    assert re.findall(r'data-currency="[a-z]+">([^<]+)<', mrr_card) == expected
    assert "From 7 active and past_due subscriptions." in mrr_card
    trial_card = billing[billing.index('id="trial-mrr"') :]
    assert re.findall(r'data-currency="[a-z]+">([^<]+)<', trial_card)[:1] == ["8.33 EUR"]  # 9999 / 12 cents


def test_runs_per_day_and_error_rate(pages):
    page = pages["/"]
    per_day: dict[date, dict[str, int]] = {}
    for _, days, status, count in RUNS:
        if in_window(days):
            day = per_day.setdefault(ago(days).date(), {"runs": 0, "succeeded": 0, "failed": 0})
            day["runs"] += count
            if status in ("succeeded", "failed"):
                day[status] += count
    succeeded = sum(day["succeeded"] for day in per_day.values())
    failed = sum(day["failed"] for day in per_day.values())
    total = sum(day["runs"] for day in per_day.values())
    if ago(0).date() == NOW.date():  # the seed, counted by hand (runs 5 minutes after midnight shift a day)
        assert (total, succeeded, failed) == (20, 11, 6)
    assert figure(page, "runs") == [str(total)]
    assert figure(page, "error_rate") == [f"{failed / (succeeded + failed) * 100:.1f}%"]
    assert f"{failed} failed of {succeeded + failed} finished" in page

    rows = re.findall(
        r'<tr data-day="([\d-]+)"><td>[\d-]+</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>([^<]+)</td></tr>',
        page,
    )
    assert len(rows) == 30
    assert rows[0][0] == NOW.date().isoformat() and rows[-1][0] == WINDOW_START.isoformat()
    for day_text, queued, ok, bad, rate in rows:
        truth = per_day.get(date.fromisoformat(day_text), {"runs": 0, "succeeded": 0, "failed": 0})
        assert (int(queued), int(ok), int(bad)) == (
            truth["runs"],
            truth["succeeded"],
            truth["failed"],
        ), day_text
        finished = truth["succeeded"] + truth["failed"]
        assert rate == (f"{truth['failed'] / finished * 100:.1f}%" if finished else "—"), day_text

    # The chart draws the same numbers: one titled bar segment per series with runs that day.
    for day, truth in per_day.items():
        other = truth["runs"] - truth["succeeded"] - truth["failed"]
        title = f"{day.isoformat()}: {truth['succeeded']} succeeded, {truth['failed']} failed, {other} other"
        segments = sum(1 for value in (truth["succeeded"], truth["failed"], other) if value)
        assert page.count(f"<title>{title}</title>") == segments, title
    assert page.count('<svg class="chart"') == 4


def test_signups_and_new_leads_charts(pages):
    page = pages["/"]
    for rows, series in ((USERS, "new users"), (LEADS, "new leads")):
        per_day: dict[date, int] = {}
        for row in rows:
            if in_window(row.days_ago):
                per_day[ago(row.days_ago).date()] = per_day.get(ago(row.days_ago).date(), 0) + 1
        drawn = re.findall(rf"<title>([\d-]+): (\d+) {series}</title>", page)
        assert {date.fromisoformat(day): int(count) for day, count in drawn} == per_day, series


def test_billing_lists(pages):
    counts = tab_counts(pages["/billing/"], "data-status")
    truth: dict[str, int] = {}
    for sub in SUBSCRIPTIONS:
        truth[sub.status] = truth.get(sub.status, 0) + 1
    assert {status: n for status, n in counts.items() if n} == truth
    assert truth["active"] == 6
    assert "1–6 of 6" in pages["/billing/?status=active"]
    assert f"1–{len(SUBSCRIPTIONS)} of {len(SUBSCRIPTIONS)}" in pages["/billing/"]
    for sub in SUBSCRIPTIONS:
        for stripe_id in (
            sub.stripe_id,
            sub.stripe_id.replace("sub_", "cus_"),
            sub.stripe_id.replace("sub_", "price_"),
        ):
            assert f"<code>{stripe_id}</code>" in pages["/billing/"], stripe_id

    # Failing: past_due sub_b1, unpaid sub_x2, and active sub_a1 whose newest invoice failed;
    # sub_a2 paid after its failure, sub_x1 is canceled.
    failing = pages["/billing/"]
    failing = failing[failing.index('id="failing"') :]
    failing_table = failing[: failing.index("invoice.payment_failed")]
    assert sorted(re.findall(r"<code>(sub_\w+)</code>", failing_table)) == ["sub_a1", "sub_b1", "sub_x2"]
    events = re.findall(r"<code>(in_\d+)</code>", pages["/billing/failed-payments"])
    assert events == ["in_0", "in_1"]  # the paid invoice is not a failure; newest first
    assert (
        "20.00 USD" in pages["/billing/failed-payments"] and "70.00 USD" in pages["/billing/failed-payments"]
    )


def test_lead_and_outbox_lists(pages):
    stages: dict[str, int] = {}
    for lead in LEADS:
        stages[lead.stage] = stages.get(lead.stage, 0) + 1
    assert tab_counts(pages["/leads/"], "data-stage") == stages | {
        "new": 3,
        "contacted": 2,
        "qualified": 1,
        "won": 3,
        "lost": 1,
    }
    assert "1–10 of 10" in pages["/leads/"]
    pricing = sum(1 for lead in LEADS if lead.source == "pricing")
    assert f"1–{pricing} of {pricing}" in pages["/leads/?source=pricing"]
    board = pages["/leads/board"]
    for stage, count in stages.items():
        assert f'id="stage-{stage}">{stage.capitalize()} <span class="count">{count}</span>' in board

    assert tab_counts(pages["/outbox/"], "data-status") == OUTBOX
    assert f"1–{sum(OUTBOX.values())} of {sum(OUTBOX.values())}" in pages["/outbox/"]
    assert "1–2 of 2" in pages["/outbox/?status=failed"]


def test_new_rows_change_the_numbers(database, pages, admin_app, staff_member):
    """The figures are live: one more won lead and one more failed run today move them at once."""
    from tests.admin.conftest import StaffBrowser

    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO leads (email, status) VALUES (%s, 'won')",
            (f"late-{uuid.uuid4().hex[:6]}@example.com",),
        )
    email, password, secret = staff_member("read_only")
    browser = StaffBrowser(admin_app, token_page="/login")
    browser.sign_in(email, password, secret)
    page = browser.get("/").get_data(as_text=True)
    assert figure(page, "leads") == ["11"]
    assert figure(page, "lead_conversion") == [f"{4 / 11 * 100:.1f}%"]
