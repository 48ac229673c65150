"""Stripe's webhook endpoint and the worker that mirrors events into subscriptions: signatures over
the raw body, durable storage before the 2xx, processing once, and order not trusted."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy.orm import Session

from nectar.marketing.billing import jobs
from nectar.marketing.billing.config import BillingConfig
from nectar.shared.config import Role
from tests.marketing import stripe_fake
from tests.marketing.billing_helpers import (
    WEBHOOK_SECRET,
    billing_app,
    close_app,
    deliver,
    make_jobs_due,
    run_billing_jobs,
)
from tests.marketing.stripe_fake import StripeFake, new_id, price, sign, subscription

PRO = price("price_test_pro", 9900)
STARTER = price("price_test_starter", 2900)


@pytest.fixture(scope="module")
def app(settings_for):
    # No Stripe key: the test-checkout configuration, where event order is handled by the watermark.
    app = billing_app(settings_for, BillingConfig(webhook_secret=WEBHOOK_SECRET))
    yield app
    close_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


def subscription_row(query, subscription_id: str) -> dict:
    rows = query(
        "SELECT status, plan, stripe_price_id, quantity, unit_amount, currency, interval, interval_count, "
        "cancel_at_period_end, "
        "canceled_at, current_period_end, stripe_event_watermark, last_paid_at, last_payment_failed_at, "
        "stripe_customer_id FROM subscriptions WHERE stripe_subscription_id = %s",
        subscription_id,
    )
    assert len(rows) == 1, f"{len(rows)} rows for {subscription_id}"
    keys = (
        "status plan price quantity unit_amount currency interval interval_count cancel_at_period_end canceled_at "
        "current_period_end watermark last_paid_at last_payment_failed_at customer"
    ).split()
    return dict(zip(keys, rows[0], strict=True))


def stored(query, event_id: str) -> list:
    return query("SELECT type, processed_at, attempts, last_error FROM stripe_events WHERE id = %s", event_id)


def jobs_for(query, event_id: str) -> list:
    return query(
        "SELECT status FROM procrastinate_jobs WHERE task_name = 'billing.process_event' AND args->>'event_id' = %s",
        event_id,
    )


def test_a_signed_event_is_stored_before_the_answer_and_mirrored_by_the_worker(client, query):
    sub = subscription(new_id("cus"), PRO, metadata={"plan": "pro"}, quantity=2)
    created = stripe_fake.event("customer.subscription.created", sub)

    response = deliver(client, created)

    assert response.status_code == 200 and response.json == {"received": True, "duplicate": False}
    # Durable before the 2xx: the event and its processing job are committed, nothing applied yet.
    assert stored(query, created["id"]) == [("customer.subscription.created", None, 0, None)]
    assert jobs_for(query, created["id"]) == [("todo",)]
    assert query("SELECT 1 FROM subscriptions WHERE stripe_subscription_id = %s", sub["id"]) == []

    run_billing_jobs(client.application)

    (row,) = stored(query, created["id"])
    assert row[1] is not None and row[2] == 1
    mirrored = subscription_row(query, sub["id"])
    assert mirrored["status"] == "active" and mirrored["plan"] == "pro"
    assert (mirrored["price"], mirrored["quantity"], mirrored["unit_amount"]) == ("price_test_pro", 2, 9900)
    assert (mirrored["currency"], mirrored["interval"], mirrored["interval_count"]) == ("usd", "month", 1)
    assert int(mirrored["current_period_end"].timestamp()) == sub["items"]["data"][0]["current_period_end"]
    assert mirrored["watermark"] == created["created"] and mirrored["customer"] == sub["customer"]


@pytest.mark.parametrize(
    "how",
    [
        "wrong secret",
        "missing header",
        "stale timestamp",
        "future timestamp",
        "malformed header",
        "body changed after signing",
    ],
)
def test_a_bad_signature_gets_400_and_nothing_is_stored(client, query, how):
    event = stripe_fake.event("customer.subscription.created", subscription(new_id("cus"), PRO))
    kwargs, reason = {
        "wrong secret": ({"secret": "whsec_not_the_endpoint_secret"}, "expected signature"),
        "missing header": ({"header": ""}, "header is missing"),
        # Older than the 300 s tolerance (a replayed delivery).
        "stale timestamp": ({"timestamp": int(time.time()) - 301}, "tolerance"),
        # As far in the future: a signature made ahead of time must not be good for longer.
        "future timestamp": ({"timestamp": int(time.time()) + 301}, "in the future"),
        "malformed header": ({"header": "v1=deadbeef"}, "Unable to extract timestamp"),
        "body changed after signing": (
            {"header": sign(b'{"id": "evt_other"}', WEBHOOK_SECRET)},
            "expected signature",
        ),
    }[how]

    response = deliver(client, event, **kwargs)

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 400 and reason in response.json["detail"]
    assert stored(query, event["id"]) == []
    assert jobs_for(query, event["id"]) == []


def _poisoned(event: dict, poison: str) -> bytes:
    """The event as JSON with `poison` (raw JSON text) as a value deep inside its object."""
    event["data"]["object"]["metadata"] = {"note": "<poison>"}
    return json.dumps(event).replace('"<poison>"', poison).encode()


@pytest.mark.parametrize(
    "poison, reason",
    [
        ('"a\\u0000b"', "/data/object/metadata/note holds a NUL character"),
        ('"a\\ud800b"', "lone surrogate"),
        ("NaN", "NaN is not a JSON number"),
        ("[" * 1000 + "]" * 1000, "deeper than 100 levels"),
    ],
)
def test_a_signed_event_jsonb_cannot_hold_gets_400_and_nothing_is_stored(client, query, poison, reason):
    """Each of these was validly signed and once answered 500."""
    event = stripe_fake.event("customer.subscription.created", subscription(new_id("cus"), PRO))
    payload = _poisoned(event, poison)
    response = client.post(
        "/stripe/webhook",
        data=payload,
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload, WEBHOOK_SECRET)},
    )
    assert response.status_code == 400 and reason in response.json["detail"], response.json
    assert stored(query, event["id"]) == []


@pytest.mark.parametrize("created", [10**30, -1, int(time.time()) + 3600])
def test_a_signed_event_created_at_no_possible_time_gets_400(client, query, created):
    event = stripe_fake.event(
        "customer.subscription.created", subscription(new_id("cus"), PRO), created=created
    )
    response = deliver(client, event)
    assert response.status_code == 400 and "created" in response.json["detail"]
    assert stored(query, event["id"]) == []


def test_a_stored_event_that_cannot_be_applied_is_marked_failed_for_staff(app, client, query):
    sub = subscription(new_id("cus"), PRO, quantity=10**30)  # stored as Stripe sent it; no column holds it
    event = stripe_fake.event("customer.subscription.created", sub)
    assert deliver(client, event).status_code == 200
    run_billing_jobs(app)
    [(kind, processed_at, attempts, last_error)] = stored(query, event["id"])
    assert processed_at is None and attempts == 1 and "out of range" in last_error


def test_a_timestamp_inside_the_tolerance_is_accepted(client, query):
    event = stripe_fake.event("customer.subscription.created", subscription(new_id("cus"), PRO))
    assert deliver(client, event, timestamp=int(time.time()) - 250).status_code == 200
    assert len(stored(query, event["id"])) == 1


def test_a_signed_body_that_is_not_an_event_gets_400(client, query):
    response = client.post(
        "/stripe/webhook",
        data=b'{"hello": "world"}',
        headers={"Stripe-Signature": sign(b'{"hello": "world"}', WEBHOOK_SECRET)},
    )
    assert response.status_code == 400 and "not a Stripe event" in response.json["detail"]


def test_the_same_event_delivered_twice_is_stored_and_processed_once(client, query, marketing_engine):
    sub = subscription(new_id("cus"), STARTER)
    created = stripe_fake.event("customer.subscription.created", sub)

    assert deliver(client, created).json == {"received": True, "duplicate": False}
    assert deliver(client, created).json == {"received": True, "duplicate": True}
    run_billing_jobs(client.application)
    # A third delivery after processing, and a stray second job for it, change nothing either.
    assert deliver(client, created).json["duplicate"] is True
    with Session(marketing_engine) as session:
        from nectar.marketing.billing.queue import enqueue_event

        enqueue_event(session, created["id"])
        session.commit()
    run_billing_jobs(client.application)

    (row,) = stored(query, created["id"])
    assert row[1] is not None and row[2] == 1, "processed exactly once"
    assert len(query("SELECT 1 FROM subscriptions WHERE stripe_subscription_id = %s", sub["id"])) == 1


@pytest.mark.parametrize("gap", [5, 0], ids=["a later second", "the same second"])
def test_updated_arriving_before_created_ends_in_the_updated_state(client, query, gap):
    customer, now = new_id("cus"), int(time.time())
    first = subscription(customer, STARTER, status="incomplete")
    later = subscription(
        customer, PRO, subscription_id=first["id"], status="active", quantity=3, cancel_at_period_end=True
    )
    created = stripe_fake.event("customer.subscription.created", first, created=now - gap)
    updated = stripe_fake.event("customer.subscription.updated", later, created=now)

    deliver(client, updated)
    run_billing_jobs(client.application)
    deliver(client, created)
    run_billing_jobs(client.application)

    mirrored = subscription_row(query, first["id"])
    assert (mirrored["status"], mirrored["plan"], mirrored["quantity"]) == ("active", "pro", 3)
    assert mirrored["cancel_at_period_end"] is True and mirrored["unit_amount"] == 9900
    assert mirrored["watermark"] == now
    # Both were processed; the older one just did not overwrite.
    assert stored(query, created["id"])[0][1] is not None


def test_payment_failed_marks_the_subscription_and_stays_for_admin(client, query):
    customer, now = new_id("cus"), int(time.time())
    sub = subscription(customer, PRO)
    deliver(client, stripe_fake.event("customer.subscription.created", sub, created=now - 60))
    paid = stripe_fake.event(
        "invoice.paid", stripe_fake.invoice(sub, email="pay@example.com"), created=now - 60
    )
    deliver(client, paid)
    run_billing_jobs(client.application)
    assert subscription_row(query, sub["id"])["last_payment_failed_at"] is None

    failed_invoice = stripe_fake.invoice(sub, status="open")
    failed = stripe_fake.event("invoice.payment_failed", failed_invoice, created=now)
    past_due = subscription(customer, PRO, subscription_id=sub["id"], status="past_due")
    deliver(client, failed)
    deliver(client, stripe_fake.event("customer.subscription.updated", past_due, created=now))
    run_billing_jobs(client.application)

    mirrored = subscription_row(query, sub["id"])
    assert mirrored["status"] == "past_due"
    assert int(mirrored["last_payment_failed_at"].timestamp()) == now
    assert mirrored["last_payment_failed_at"] > mirrored["last_paid_at"]
    # The failed event stays, processed, for admin's list of failed payments.
    (row,) = stored(query, failed["id"])
    assert row[0] == "invoice.payment_failed" and row[1] is not None

    # An older success arriving late does not hide the newer failure.
    late = stripe_fake.event("invoice.paid", stripe_fake.invoice(sub), created=now - 30)
    deliver(client, late)
    run_billing_jobs(client.application)
    mirrored = subscription_row(query, sub["id"])
    assert mirrored["last_payment_failed_at"] > mirrored["last_paid_at"]


def test_payment_failed_before_any_subscription_event_still_marks_it(client, query):
    sub = subscription(new_id("cus"), STARTER, metadata={"plan": "starter"})
    failed = stripe_fake.event("invoice.payment_failed", stripe_fake.invoice(sub, status="open"))
    deliver(client, failed)
    run_billing_jobs(client.application)
    mirrored = subscription_row(query, sub["id"])
    assert mirrored["last_payment_failed_at"] is not None and mirrored["plan"] == "starter"
    # The subscription's own event then fills in its state.
    deliver(client, stripe_fake.event("customer.subscription.created", sub))
    run_billing_jobs(client.application)
    assert subscription_row(query, sub["id"])["status"] == "active"


def test_deleted_means_canceled_and_a_late_update_does_not_revive_it(client, query):
    customer, now = new_id("cus"), int(time.time())
    sub = subscription(customer, PRO)
    gone = subscription(customer, PRO, subscription_id=sub["id"], status="canceled", canceled_at=now)
    stale = subscription(customer, PRO, subscription_id=sub["id"], status="active", quantity=5)
    deliver(client, stripe_fake.event("customer.subscription.created", sub, created=now - 100))
    deliver(client, stripe_fake.event("customer.subscription.deleted", gone, created=now))
    run_billing_jobs(client.application)
    # Same second as the deletion: order unknown, but a cancellation is final in Stripe.
    deliver(client, stripe_fake.event("customer.subscription.updated", stale, created=now))
    run_billing_jobs(client.application)

    mirrored = subscription_row(query, sub["id"])
    assert mirrored["status"] == "canceled" and int(mirrored["canceled_at"].timestamp()) == now
    assert mirrored["quantity"] == 1


def test_other_event_types_are_stored_and_marked_processed(client, query):
    other = stripe_fake.event("customer.created", {"id": new_id("cus"), "object": "customer"})
    deliver(client, other)
    run_billing_jobs(client.application)
    (row,) = stored(query, other["id"])
    assert row[1] is not None and row[3] is None


def test_a_failing_event_records_the_error_and_is_retried(client, query, database):
    broken = subscription(new_id("cus"), PRO)
    broken["items"]["data"][0]["quantity"] = "many"  # cannot be mirrored
    event = stripe_fake.event("customer.subscription.created", broken)
    deliver(client, event)
    run_billing_jobs(client.application)

    (row,) = stored(query, event["id"])
    assert row[1] is None and row[2] == 1 and "ValueError" in row[3]
    assert jobs_for(query, event["id"]) == [("todo",)], "a retry is scheduled"
    make_jobs_due(database)
    run_billing_jobs(client.application)
    assert stored(query, event["id"])[0][2] == 2
    # Nothing half-applied.
    assert query("SELECT 1 FROM subscriptions WHERE stripe_subscription_id = %s", broken["id"]) == []


def test_the_sweep_requeues_an_event_whose_job_was_lost(client, query, database, marketing_engine):
    sub = subscription(new_id("cus"), STARTER)
    event = stripe_fake.event("customer.subscription.created", sub)
    deliver(client, event)
    with database.connect(Role.OWNER) as conn:
        conn.execute("DELETE FROM procrastinate_jobs WHERE args->>'event_id' = %s", (event["id"],))
        conn.execute(
            "UPDATE stripe_events SET received_at = now() - interval '10 minutes' WHERE id = %s",
            (event["id"],),
        )

    with Session(marketing_engine) as session:
        counts = jobs.requeue_forgotten(session)
        session.commit()
        # Queued once: a second sweep sees the live job and adds nothing.
        assert jobs.requeue_forgotten(session)["events"] == 0
        session.commit()
    assert counts["events"] >= 1
    run_billing_jobs(client.application)
    assert stored(query, event["id"])[0][1] is not None
    assert subscription_row(query, sub["id"])["status"] == "active"


def test_without_a_webhook_secret_in_production_the_endpoint_is_off(settings_for, query):
    app = billing_app(settings_for, BillingConfig(production=True))
    try:
        event = stripe_fake.event("customer.created", {"id": new_id("cus")})
        response = deliver(app.test_client(), event)
        assert response.status_code == 503 and "STRIPE_WEBHOOK_SECRET" in response.json["detail"]
        assert stored(query, event["id"]) == []
    finally:
        close_app(app)


class TestWithAStripeKey:
    """With a key the worker re-reads the subscription from Stripe (the fake), so whatever order and
    whatever the events carry, the mirror ends as Stripe has it."""

    @pytest.fixture(scope="class")
    def fake(self):
        fake = StripeFake().start()
        yield fake
        fake.stop()

    @pytest.fixture(scope="class")
    def config(self, fake):
        return BillingConfig(
            secret_key=fake.secret_key,
            webhook_secret=WEBHOOK_SECRET,
            price_ids={"starter": "price_live_starter", "pro": "price_live_pro"},
            api_base=fake.url,
        )

    @pytest.fixture(scope="class")
    def keyed_app(self, settings_for, config):
        app = billing_app(settings_for, config)
        yield app
        close_app(app)

    def test_stale_events_end_in_stripes_current_state(self, keyed_app, fake, query):
        client, customer = keyed_app.test_client(), new_id("cus")
        current = fake.put(
            subscription(customer, price("price_live_pro", 9900), status="active", cancel_at_period_end=True)
        )
        stale_created = subscription(
            customer, price("price_live_starter", 2900), subscription_id=current["id"]
        )
        stale_created["status"] = "incomplete"
        now = int(time.time())

        deliver(client, stripe_fake.event("customer.subscription.updated", stale_created, created=now))
        deliver(client, stripe_fake.event("customer.subscription.created", stale_created, created=now - 10))
        run_billing_jobs(keyed_app)

        mirrored = subscription_row(query, current["id"])
        assert (mirrored["status"], mirrored["plan"], mirrored["price"]) == (
            "active",
            "pro",
            "price_live_pro",
        )
        assert mirrored["cancel_at_period_end"] is True
        reads = fake.calls("GET", f"/v1/subscriptions/{current['id']}")
        assert len(reads) == 2 and all(
            r.headers["Authorization"] == f"Bearer {fake.secret_key}" for r in reads
        )

    def test_an_event_that_failed_40_times_is_still_retried_and_applied_once_the_cause_is_gone(
        self, settings_for, config, keyed_app, fake, query, database, marketing_engine
    ):
        # The Stripe key was rotated and ours is stale: every re-read is refused (401).
        stale_key = billing_app(settings_for, replace(config, secret_key="sk_test_rotated_away_0123456789"))
        sub = fake.put(subscription(new_id("cus"), price("price_live_pro", 9900)))
        event = stripe_fake.event("customer.subscription.created", sub)
        try:
            deliver(stale_key.test_client(), event)
            for _ in range(40):
                make_jobs_due(database)
                run_billing_jobs(stale_key)
        finally:
            close_app(stale_key)

        ((_, processed, attempts, error),) = stored(query, event["id"])
        assert processed is None and attempts == 40 and "Invalid API Key" in error  # for staff
        ((status, attempts_in_queue, wait),) = query(
            "SELECT status, attempts, scheduled_at - now() FROM procrastinate_jobs "
            "WHERE task_name = 'billing.process_event' AND args->>'event_id' = %s",
            event["id"],
        )
        assert status == "todo" and attempts_in_queue == 40, "still retried, not given up"
        assert wait.total_seconds() <= jobs.RETRY_CAP_SECONDS  # the backoff levels off at the cap

        # Its job lost too (a purged queue): the sweep still queues it, however often it failed.
        with database.connect(Role.OWNER) as conn:
            conn.execute("DELETE FROM procrastinate_jobs WHERE args->>'event_id' = %s", (event["id"],))
            conn.execute(
                "UPDATE stripe_events SET received_at = now() - interval '1 day' WHERE id = %s",
                (event["id"],),
            )
        with Session(marketing_engine) as session:
            assert jobs.requeue_forgotten(session)["events"] >= 1
            session.commit()

        run_billing_jobs(keyed_app)  # the key is fixed
        ((_, processed, attempts, error),) = stored(query, event["id"])
        assert processed is not None and attempts == 41 and error is None
        assert subscription_row(query, sub["id"])["status"] == "active"

    def test_two_workers_never_write_an_older_state_over_a_newer_one(self, keyed_app, fake, query, database):
        customer = new_id("cus")
        older = subscription(customer, price("price_live_starter", 2900), status="incomplete")
        newer = fake.put(
            subscription(
                customer, price("price_live_pro", 9900), subscription_id=older["id"], status="active"
            )
        )
        created = stripe_fake.event("customer.subscription.created", older)
        updated = stripe_fake.event("customer.subscription.updated", newer)
        # The first worker to ask Stripe gets the state from before the upgrade, slowly.
        slow = fake.answer_next_read_slowly(older["id"], older)
        client = keyed_app.test_client()
        deliver(client, created)
        deliver(client, updated)

        workers = threading.Thread(target=run_billing_jobs, args=(keyed_app,), kwargs={"concurrency": 2})
        workers.start()
        try:
            assert slow.started.wait(30), "a worker reads the subscription from Stripe"
            # Let the slow read finish once the other worker is either done (it wrote the newer
            # state) or waiting for the first to finish with this subscription.
            for _ in range(300):
                processed = query(
                    "SELECT count(*) FROM stripe_events WHERE id IN (%s, %s) AND processed_at IS NOT NULL",
                    created["id"],
                    updated["id"],
                )[0][0]
                waiting = query(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()"
                )[0][0]
                if processed or waiting:
                    break
                time.sleep(0.05)
        finally:
            slow.release()
            workers.join(60)

        assert [
            row[1] is not None for row in (*stored(query, created["id"]), *stored(query, updated["id"]))
        ] == [
            True,
            True,
        ]
        mirrored = subscription_row(query, older["id"])
        assert (mirrored["status"], mirrored["plan"]) == ("active", "pro"), "Stripe's current state"

    def test_an_object_stripe_does_not_have_falls_back_to_the_event(self, keyed_app, fake, query):
        sub = subscription(new_id("cus"), price("price_live_starter", 2900))
        deliver(keyed_app.test_client(), stripe_fake.event("customer.subscription.created", sub))
        run_billing_jobs(keyed_app)
        assert subscription_row(query, sub["id"])["plan"] == "starter"


def test_a_price_billed_every_few_intervals_keeps_its_count(client, query):
    quarterly = stripe_fake.price("price_test_quarterly", 27000, interval="month", interval_count=3)
    sub = subscription(new_id("cus"), quarterly, metadata={"plan": "pro"})
    assert deliver(client, stripe_fake.event("customer.subscription.created", sub)).status_code == 200
    run_billing_jobs(client.application)
    mirrored = subscription_row(query, sub["id"])
    assert (mirrored["unit_amount"], mirrored["interval"], mirrored["interval_count"]) == (27000, "month", 3)
