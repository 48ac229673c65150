"""Billing oversight pages: search and filters, one subscription in full with every Stripe id, failed
payments read from stored Stripe events (whatever shape the invoice came in), and no writes."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from nectar.shared.config import Role


@pytest.fixture
def tag():
    return uuid.uuid4().hex[:10]


def add_subscription(database, tag, suffix, **columns):
    values = {
        "stripe_subscription_id": f"sub_{suffix}_{tag}",
        "stripe_customer_id": f"cus_{suffix}_{tag}",
        "stripe_price_id": f"price_{suffix}_{tag}",
        "customer_email": f"{suffix}-{tag}@example.com",
        "plan": "pro",
        "status": "active",
        "unit_amount": 1999,
        "currency": "usd",
        "interval": "month",
        "quantity": 1,
    } | columns
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    with database.connect(Role.MARKETING, autocommit=True) as conn:
        return conn.execute(
            f"INSERT INTO subscriptions ({names}) VALUES ({marks}) RETURNING id",
            list(values.values()),  # noqa: S608
        ).fetchone()[0]


def test_search_by_email_or_stripe_id_and_filter_by_status(database, staff_browser, tag):
    add_subscription(database, tag, "one")
    add_subscription(database, tag, "two", status="past_due")
    browser = staff_browser("read_only")

    def found(**args):
        page = browser.get("/billing/", query_string=args).get_data(as_text=True)
        listed = page[: page.index('id="failing"')]  # the list, not the failing-payments section
        return sorted(re.findall(rf"<code>(sub_\w+_{tag})</code>", listed))

    assert found(q=tag) == [f"sub_one_{tag}", f"sub_two_{tag}"]
    assert found(q=tag, status="past_due") == [f"sub_two_{tag}"]
    assert found(q=f"cus_one_{tag}") == [f"sub_one_{tag}"]
    assert found(q=f"price_two_{tag}") == [f"sub_two_{tag}"]
    assert found(q=f"sub_two_{tag}") == [f"sub_two_{tag}"]
    assert found(q=f"sub_two_{tag[:4]}") == []  # ids match whole, emails by part
    response = browser.get("/billing/", query_string={"status": "bogus"})
    assert response.status_code == 400 and "no subscription status" in response.get_data(as_text=True)


def test_subscription_detail_shows_every_stripe_id_and_its_monthly_amount(database, staff_browser, tag):
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO organizations (name, slug) VALUES (%s, %s) RETURNING id",
            (f"Org {tag}", f"org-{tag}"),
        ).fetchone()[0]
    subscription_id = add_subscription(
        database, tag, "yearly", interval="year", unit_amount=120000, quantity=2, currency="eur",
        organization_id=org, checkout_session_id=f"cs_{tag}", provisioning_status="provisioned",
    )  # fmt: skip
    page = staff_browser("read_only").get(f"/billing/subscriptions/{subscription_id}").get_data(as_text=True)
    for stripe_id in (f"sub_yearly_{tag}", f"cus_yearly_{tag}", f"price_yearly_{tag}", f"cs_{tag}"):
        assert f"<code>{stripe_id}</code>" in page
    assert "1,200.00 EUR × 2 per year" in page
    assert "<tr><th>Per month</th><td>200.00 EUR" in page  # 120000 x 2 / 12 cents
    assert f'<a href="/orgs/{org}">Org {tag}</a>' in page
    trial = add_subscription(database, tag, "trial", status="trialing", unit_amount=999, currency="jpy")
    page = staff_browser("read_only").get(f"/billing/subscriptions/{trial}").get_data(as_text=True)
    assert "999 JPY" in page and "not counted in MRR: trialing" in page
    assert staff_browser("read_only").get(f"/billing/subscriptions/{uuid.uuid4()}").status_code == 404


def add_event(database, event_id, payload, created=1_700_000_000, event_type="invoice.payment_failed"):
    with database.connect(Role.MARKETING, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO stripe_events (id, type, payload, stripe_created) VALUES (%s, %s, %s, %s)",
            (event_id, event_type, json.dumps(payload), created),
        )


def test_failed_payments_read_any_invoice_shape(database, staff_browser, tag):
    # Stripe's newer API versions move the subscription under parent.subscription_details and may
    # expand the customer into an object; a malformed payload still lists, with what is known.
    add_event(database, f"evt_new_{tag}", {"data": {"object": {
        "id": f"in_new_{tag}", "customer": {"id": f"cus_new_{tag}", "object": "customer"},
        "parent": {"subscription_details": {"subscription": f"sub_new_{tag}"}},
        "amount_due": 4900, "currency": "eur", "attempt_count": 3, "next_payment_attempt": 1_900_000_000,
        "customer_email": f"new-{tag}@example.com"}}}, created=2_000_000_000)  # fmt: skip
    add_event(database, f"evt_odd_{tag}", {"data": {"object": {"amount_due": "lots"}}}, created=1_999_999_999)
    add_event(
        database, f"evt_paid_{tag}", {"data": {"object": {"id": f"in_paid_{tag}"}}}, event_type="invoice.paid"
    )
    page = staff_browser("read_only").get("/billing/failed-payments").get_data(as_text=True)
    assert f"<code>in_new_{tag}</code>" in page and f"<code>sub_new_{tag}</code>" in page
    assert f"<code>cus_new_{tag}</code>" in page and f"new-{tag}@example.com" in page
    assert "49.00 EUR" in page and "2030-03-17" in page  # next attempt
    assert f"<code>evt_odd_{tag}</code>" in page
    assert f"in_paid_{tag}" not in page
    assert page.index(f"evt_new_{tag}") < page.index(f"evt_odd_{tag}")  # newest first
    assert "(not processed yet)" in page


def test_billing_pages_need_a_staff_session_and_take_no_writes(admin_app, staff_browser):
    client = admin_app.test_client()
    for path in (
        "/billing/",
        "/billing/usage",
        "/billing/failed-payments",
        f"/billing/subscriptions/{uuid.uuid4()}",
    ):
        assert client.get(path).status_code == 302, path
    browser = staff_browser("superadmin")
    assert browser.post("/billing/", {}).status_code == 405  # oversight only: Stripe is the source of truth


def test_events_and_provisioning_stuck_for_more_than_five_minutes_are_listed_with_their_error(
    database, staff_browser, tag
):
    with database.connect(Role.MARKETING, autocommit=True) as conn:
        for event_id, age, processed, error in (
            (f"evt_stuck_{tag}", "10 minutes", False, "stripe: the API key is invalid"),
            (f"evt_fresh_{tag}", "1 minute", False, None),
            (f"evt_done_{tag}", "1 hour", True, None),
        ):
            conn.execute(
                "INSERT INTO stripe_events (id, type, payload, stripe_created, received_at, processed_at, "
                "attempts, last_error) VALUES (%s, 'customer.subscription.updated', '{}', 1700000000, "
                "now() - CAST(%s AS interval), CASE WHEN %s THEN now() END, 7, %s)",
                (event_id, age, processed, error),
            )
    waiting = add_subscription(
        database, tag, "waiting", provisioning_status="pending", provisioning_attempts=4,
        provisioning_error="core refused (401): A valid service credential is required.",
        organization_name=f"Waiting {tag}",
    )  # fmt: skip
    add_subscription(database, tag, "justnow", provisioning_status="pending", organization_name=f"Now {tag}")
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "UPDATE subscriptions SET updated_at = now() - interval '10 minutes' WHERE id = %s", (waiting,)
        )
    page = staff_browser("read_only").get("/billing/").get_data(as_text=True)
    section = page[page.index('id="waiting"') :]
    assert f"<code>evt_stuck_{tag}</code>" in section and "stripe: the API key is invalid" in section
    assert f"evt_fresh_{tag}" not in section and f"evt_done_{tag}" not in section
    assert f"Waiting {tag}" in section and "core refused (401)" in section
    assert f"Now {tag}" not in section


def test_usage_lists_the_top_consumers_of_a_month_with_the_platform_total(database, staff_browser, tag):
    orgs = {name: uuid.uuid4() for name in ("busy", "quiet")}
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        before = conn.execute(
            "SELECT coalesce(sum(runs), 0) FROM usage_daily WHERE day BETWEEN '2026-02-01' AND '2026-02-28'"
        ).fetchone()[0]
        for name, org in orgs.items():
            conn.execute(
                "INSERT INTO organizations (id, name, slug, plan) VALUES (%s, %s, %s, 'pro')",
                (org, f"{name}-{tag}", f"{name}-{tag}"),
            )
        for org, day, trigger, shard, runs, steps, http_calls, run_ms in (
            (orgs["busy"], "2026-02-03", "http", 0, 900, 1800, 0, 4500),
            (orgs["busy"], "2026-02-03", "http", 5, 100, 200, 0, 500),  # the same day, another row
            (orgs["busy"], "2026-02-27", "manual", 0, 10, 30, 10, 2000),
            (orgs["quiet"], "2026-02-10", "manual", 0, 3, 6, 3, 300),
            (orgs["quiet"], "2026-03-01", "manual", 0, 50, 50, 0, 100),  # next month
        ):
            conn.execute(
                "INSERT INTO usage_daily (org_id, day, trigger, shard, runs, steps, http_calls, run_ms) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (org, day, trigger, shard, runs, steps, http_calls, run_ms),
            )
    browser = staff_browser("support")
    page = browser.get("/billing/usage?month=2026-02").get_data(as_text=True)
    assert "Usage in February 2026" in page
    assert page.index(f"busy-{tag}") < page.index(f"quiet-{tag}")
    busy = page[page.index(f'data-org="{orgs["busy"]}"') :]
    assert re.search(r'data-usage="runs">1,010<.*data-usage="endpoint_calls">1,000<', busy, re.S)
    assert re.search(r'data-usage="run_seconds">7\.0<', busy)
    quiet = page[page.index(f'data-org="{orgs["quiet"]}"') :]
    assert re.search(r'data-usage="runs">3<.*data-usage="http_calls">3<', quiet, re.S)
    total = page[page.index('data-org="all"') :]
    assert f'data-usage="runs">{before + 1013:,}<' in total
    for month in ("2026-13", "february", "9999-12", "2026-02\x00"):
        assert browser.get(f"/billing/usage?month={month}").status_code == 400, month


def test_usage_stripe_refused_is_listed_with_why(database, staff_browser, tag):
    org = uuid.uuid4()
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, slug) VALUES (%s, %s, %s)",
            (org, f"refused-{tag}", f"refused-{tag}"),
        )
    with database.connect(Role.MARKETING, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO usage_reports (organization_id, day, meter, value, identifier, stripe_customer_id, mode, "
            "status, error) VALUES (%s, '2026-11-30', 'nectar_runs', 1234, %s, 'cus_gone', 'stripe', 'refused', "
            "'No such customer: cus_gone')",
            (org, f"nectar-{tag}"),
        )
    page = staff_browser("support").get("/billing/").get_data(as_text=True)
    refused = page[page.index('id="refused-usage"') :]
    assert f"refused-{tag}" in refused and "2026-11-30" in refused and "1,234" in refused
    assert "No such customer: cus_gone" in refused
