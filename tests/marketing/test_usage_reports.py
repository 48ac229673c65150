"""Paid plans' usage reported to Stripe's Billing Meters by marketing's worker (the fake Stripe
speaks the API): each day that is over, once per organization, with an identifier Stripe
deduplicates on; days without runs recorded without a call; Stripe's trouble retried until it
passes, never billed twice; a refusal recorded for staff; the test checkout records it without
Stripe; and nothing is reported where billing is off."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nectar.marketing.billing.config import BillingConfig
from nectar.marketing.billing.queue import QUEUE, REPORT_USAGE
from nectar.shared.config import Role
from nectar.shared.jobs import job_statement
from tests.marketing.billing_helpers import (
    WEBHOOK_SECRET,
    billing_app,
    close_app,
    make_jobs_due,
    run_billing_jobs,
)
from tests.marketing.stripe_fake import StripeFake, new_id

METER = "nectar_runs"


@pytest.fixture(scope="module")
def fake():
    fake = StripeFake().start()
    fake.meters.add(METER)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def app(settings_for, fake):
    config = BillingConfig(
        secret_key=fake.secret_key, webhook_secret=WEBHOOK_SECRET, api_base=fake.url, meter_event_name=METER
    )
    app = billing_app(settings_for, config)
    yield app
    close_app(app)


def _days_ago(days: int):
    return datetime.now(UTC).date() - timedelta(days=days)


def _paying_organization(
    database, customer: str, *, status: str = "active", since_days: int = 5
) -> uuid.UUID:
    org = uuid.uuid4()
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, slug, plan) VALUES (%s, %s, %s, 'pro')",
            (org, f"Paying {org.hex[:6]}", f"paying-{org.hex[:10]}"),
        )
        conn.execute(
            "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, organization_id, plan, status, "
            "created_at) VALUES (%s, %s, %s, 'pro', %s, now() - make_interval(days => %s))",
            (new_id("sub"), customer, org, status, since_days),
        )
    return org


def _used(database, org, days_ago: int, *runs_per_row: int) -> None:
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for shard, runs in enumerate(runs_per_row):
            conn.execute(
                "INSERT INTO usage_daily (org_id, day, trigger, shard, runs) VALUES (%s, %s, 'http', %s, %s)",
                (org, _days_ago(days_ago), shard, runs),
            )


def _report(app, database) -> None:
    """The hourly job, queued now and run as the worker would."""
    with database.connect(Role.MARKETING, autocommit=True) as conn:
        conn.execute(*job_statement(REPORT_USAGE, {"timestamp": 0}, queue=QUEUE))
    run_billing_jobs(app)


def _reports(database, org) -> dict:
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT day, value, mode, status, error, identifier FROM usage_reports WHERE organization_id = %s",
            (org,),
        ).fetchall()
    return {day: tuple(row) for day, *row in rows}


def _customer(fake) -> str:
    return fake.put({"id": new_id("cus"), "object": "customer"})["id"]


def test_each_day_that_is_over_is_reported_once_with_an_identifier_stripe_deduplicates_on(
    app, fake, database
):
    customer = _customer(fake)
    org = _paying_organization(database, customer, since_days=5)
    _used(database, org, 4, 40)
    _used(database, org, 2, 5, 2)  # one day spread over two rows
    _used(database, org, 0, 100)  # today: not over yet
    _report(app, database)

    sent = [e for e in fake.meter_events if e["payload"]["stripe_customer_id"] == customer]
    assert sorted(int(e["payload"]["value"]) for e in sent) == [7, 40]
    for event in sent:
        day = datetime.fromtimestamp(event["timestamp"], UTC).date()
        assert day in (_days_ago(4), _days_ago(2)) and event["event_name"] == METER
    assert len({e["identifier"] for e in sent}) == 2
    reports = _reports(database, org)
    assert _days_ago(0) not in reports
    assert reports[_days_ago(4)][:3] == (40, "stripe", "reported")
    assert reports[_days_ago(3)][:3] == (0, "none", "reported")  # recorded without a call
    assert {e["identifier"] for e in sent} == {reports[_days_ago(d)][4] for d in (4, 2)}

    _report(app, database)  # an hour later: nothing new is due
    assert len([e for e in fake.meter_events if e["payload"]["stripe_customer_id"] == customer]) == 2


def test_stripe_failing_is_retried_until_it_passes_and_never_bills_twice(app, fake, database):
    customer = _customer(fake)
    org = _paying_organization(database, customer, since_days=3)
    _used(database, org, 2, 12)
    fake.meter_failures = 10  # more than the SDK's own retries: the job fails and waits its backoff
    _report(app, database)
    assert _days_ago(2) not in _reports(database, org)
    fake.meter_failures = 0
    assert make_jobs_due(database) >= 1
    run_billing_jobs(app)
    sent = [e for e in fake.meter_events if e["payload"]["stripe_customer_id"] == customer]
    assert [int(e["payload"]["value"]) for e in sent] == [12]
    assert _reports(database, org)[_days_ago(2)][:3] == (12, "stripe", "reported")


def test_a_report_stripe_refuses_is_recorded_with_why(app, fake, database):
    org = _paying_organization(database, "cus_not_in_this_stripe_account", since_days=2)
    _used(database, org, 1, 3)
    _used(database, org, 2, 3)
    _report(app, database)
    value, mode, status, error, _identifier = _reports(database, org)[_days_ago(2)]
    assert (value, status) == (3, "refused") and "No such customer" in error


def test_lapsed_subscriptions_and_organizations_without_one_are_not_reported(app, fake, database):
    customer = _customer(fake)
    org = _paying_organization(database, customer, status="canceled", since_days=3)
    _used(database, org, 2, 9)
    _report(app, database)
    assert _reports(database, org) == {}
    assert not [e for e in fake.meter_events if e["payload"]["stripe_customer_id"] == customer]


def test_the_test_checkout_records_usage_without_stripe_and_billing_off_reports_nothing(
    settings_for, database
):
    for config, expected in (
        (BillingConfig(webhook_secret=WEBHOOK_SECRET, meter_event_name=METER), "test"),
        (BillingConfig(production=True, meter_event_name=METER), None),
    ):
        app = billing_app(settings_for, config)
        try:
            org = _paying_organization(database, new_id("cus"), since_days=3)
            _used(database, org, 2, 4)
            _report(app, database)
            reports = _reports(database, org)
            if expected is None:
                assert reports == {}
            else:
                assert reports[_days_ago(2)][:3] == (4, expected, "reported")
        finally:
            close_app(app)
