"""A completed checkout provisions the organization in core through core's contract, for real: core's
app serves its service API on loopback, on the same test database, and marketing's worker calls it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.orm import Session

from nectar.core.app import create_app as create_core_app
from nectar.marketing.billing import jobs
from nectar.marketing.billing.config import BillingConfig
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from tests.marketing import stripe_fake
from tests.marketing.billing_helpers import (
    SERVICE_TOKEN,
    WEBHOOK_SECRET,
    billing_app,
    browser,
    buy,
    buy_and_process,
    change_price,
    close_app,
    deliver,
    free_port,
    make_jobs_due,
    run_billing_jobs,
    served,
)
from tests.marketing.stripe_fake import StripeFake, new_id

PRICE_IDS = {"starter": "price_1StarterMonthly", "pro": "price_1ProMonthly"}


@pytest.fixture(scope="module")
def fake():
    fake = StripeFake().start()
    fake.add_price(PRICE_IDS["starter"], 2900)
    fake.add_price(PRICE_IDS["pro"], 9900)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def core_app(settings_for):
    app = create_core_app(settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def core_port():
    return free_port()


@pytest.fixture
def core(core_app, core_port):
    """Core, up, at the address marketing is configured with."""
    with served(core_app, core_port) as url:
        yield url


@pytest.fixture(scope="module")
def config(fake) -> BillingConfig:
    return BillingConfig(
        secret_key=fake.secret_key,
        webhook_secret=WEBHOOK_SECRET,
        price_ids=PRICE_IDS,
        api_base=fake.url,
        core_public_url="https://app.nectar.example",
    )


@pytest.fixture(scope="module")
def app(settings_for, config, core_port):
    app = billing_app(
        settings_for,
        config,
        CORE_API_URL=f"http://127.0.0.1:{core_port}",
        CORE_SERVICE_TOKEN=SERVICE_TOKEN,
    )
    yield app
    close_app(app)


def organization_in_core(query, session_id: str) -> list:
    return query(
        "SELECT o.id, o.name, o.plan, u.email, m.role FROM organizations o JOIN memberships m ON m.org_id = o.id "
        "JOIN users u ON u.id = m.user_id WHERE o.external_ref = %s",
        session_id,
    )


def mirror(query, session_id: str) -> dict:
    ((org, status, error, attempts, core_plan),) = query(
        "SELECT organization_id, provisioning_status, provisioning_error, provisioning_attempts, core_plan "
        "FROM subscriptions WHERE checkout_session_id = %s",
        session_id,
    )
    return {
        "organization_id": org,
        "status": status,
        "error": error,
        "attempts": attempts,
        "core_plan": core_plan,
    }


def emails(query, to: str, category: str) -> list:
    return query("SELECT body_text FROM email_outbox WHERE to_address = %s AND category = %s", to, category)


def test_a_completed_checkout_creates_the_organization_and_its_owner_in_core(app, fake, core, query):
    email, session_id = buy_and_process(app, fake, plan="pro", organization="Acme Robotics")

    ((org_id, name, plan, owner, role),) = organization_in_core(query, session_id)
    assert (name, plan, owner, role) == ("Acme Robotics", "pro", email, "owner")
    state = mirror(query, session_id)
    assert state == {
        "organization_id": org_id,
        "status": "provisioned",
        "error": None,
        "attempts": 1,
        "core_plan": "pro",
    }
    # Core asks the new user to set a password; marketing welcomes them, once.
    assert len(emails(query, email, "account.set_password")) == 1
    ((welcome,),) = emails(query, email, "welcome")
    assert "Acme Robotics" in welcome and "Pro" in welcome and "https://app.nectar.example/login" in welcome
    public_url = app.config["NECTAR_SETTINGS"].public_url
    billing_link = re.search(rf"{re.escape(public_url)}(/billing/\S+)", welcome).group(1)
    assert "billing link" in browser(app).get(billing_link).get_data(as_text=True)
    ((lead_status,),) = query("SELECT status FROM leads WHERE email = %s", email)
    assert lead_status == "won"

    page = browser(app).get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
    assert "Your organization is ready" in page and "set your password" in page


def test_core_down_means_retry_and_then_success_once_it_is_up(
    app, fake, core_app, core_port, query, database
):
    # Core is not listening.
    email, session_id = buy_and_process(app, fake, plan="starter", organization="Patient Co")

    state = mirror(query, session_id)
    assert state["status"] == "pending" and state["attempts"] == 1 and "unreachable" in state["error"]
    assert organization_in_core(query, session_id) == []
    assert query(
        "SELECT status FROM procrastinate_jobs WHERE task_name = 'billing.provision' AND args->>'subscription_id' = %s",
        str(query("SELECT id FROM subscriptions WHERE checkout_session_id = %s", session_id)[0][0]),
    ) == [("todo",)], "a retry is scheduled, with backoff"
    waiting = browser(app).get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
    assert "setting things up" in waiting

    with served(core_app, core_port):
        make_jobs_due(database)
        run_billing_jobs(app)

    ((_, name, plan, owner, _),) = organization_in_core(query, session_id)
    assert (name, plan, owner) == ("Patient Co", "starter", email)
    state = mirror(query, session_id)
    assert state["status"] == "provisioned" and state["error"] is None and state["attempts"] == 2
    assert len(emails(query, email, "welcome")) == 1


def test_the_same_event_twice_provisions_once(app, fake, core, query):
    email, session_id, events = buy(app, fake, organization="Twice Ltd")
    client = app.test_client()
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    for event in events + [completed]:
        deliver(client, event)
    run_billing_jobs(app)
    deliver(client, completed)
    run_billing_jobs(app)

    assert len(organization_in_core(query, session_id)) == 1
    assert query("SELECT count(*) FROM organizations WHERE name = 'Twice Ltd'") == [(1,)]
    assert query("SELECT count(*) FROM users WHERE email = %s", email) == [(1,)]
    assert len(emails(query, email, "welcome")) == 1
    assert mirror(query, session_id)["status"] == "provisioned"


def test_a_lost_answer_from_core_is_retried_into_the_same_organization(app, fake, core, query, database):
    email, session_id = buy_and_process(app, fake, organization="Lost Answer Ltd")
    ((first_org, *_),) = organization_in_core(query, session_id)
    # As if core made the organization but its answer never reached us: our side rolled back.
    ((subscription_id,),) = query("SELECT id FROM subscriptions WHERE checkout_session_id = %s", session_id)
    with database.connect(Role.MARKETING) as conn:
        conn.execute(
            "UPDATE subscriptions SET provisioning_status = 'pending', organization_id = NULL, core_plan = NULL, "
            "provisioned_at = NULL WHERE id = %s",
            (subscription_id,),
        )
        conn.execute("DELETE FROM email_outbox WHERE to_address = %s AND category = 'welcome'", (email,))
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('marketing', 'billing.provision', 0, NULL, NULL, "
            "%s::jsonb, NULL)::procrastinate_job_to_defer_v1])",
            (f'{{"subscription_id": "{subscription_id}"}}',),
        )
    run_billing_jobs(app)

    assert [row[0] for row in organization_in_core(query, session_id)] == [first_org]
    assert query("SELECT count(*) FROM organizations WHERE name = 'Lost Answer Ltd'") == [(1,)]
    assert mirror(query, session_id)["organization_id"] == first_org
    assert len(emails(query, email, "welcome")) == 1


def test_the_sweep_provisions_a_checkout_whose_job_was_lost(
    app, fake, core_app, core_port, query, database, marketing_engine
):
    # Core is down: the provisioning job waits for its retry...
    _, session_id = buy_and_process(app, fake, organization="Swept Up")
    assert mirror(query, session_id)["status"] == "pending"
    with database.connect(Role.OWNER) as conn:
        # ...and is then lost (a purged queue, say), a while ago.
        conn.execute(
            "DELETE FROM procrastinate_jobs WHERE task_name = 'billing.provision' AND status = 'todo'"
        )
        conn.execute(
            "UPDATE subscriptions SET updated_at = now() - interval '10 minutes' WHERE checkout_session_id = %s",
            (session_id,),
        )

    with Session(marketing_engine) as session:
        assert jobs.requeue_forgotten(session)["provisioning"] == 1
        session.commit()
    with served(core_app, core_port):
        run_billing_jobs(app)

    assert mirror(query, session_id)["status"] == "provisioned"
    assert len(organization_in_core(query, session_id)) == 1


def test_plan_changes_and_cancellation_follow_in_core(app, fake, core, query):
    _, session_id = buy_and_process(app, fake, plan="pro", organization="Changing Inc")

    # The customer downgrades in the portal: Stripe has the new state and sends `updated`.
    sub = change_price(app, fake, session_id, PRICE_IDS["starter"])
    run_billing_jobs(app)
    assert organization_in_core(query, session_id)[0][2] == "starter"
    assert mirror(query, session_id)["core_plan"] == "starter"

    sub.update(status="canceled", canceled_at=sub["created"] + 10)
    deliver(app.test_client(), stripe_fake.event("customer.subscription.deleted", sub))
    run_billing_jobs(app)
    assert organization_in_core(query, session_id)[0][2] == "free"
    ((status, core_plan),) = query(
        "SELECT status, core_plan FROM subscriptions WHERE checkout_session_id = %s", session_id
    )
    assert (status, core_plan) == ("canceled", "free")


def test_core_refusing_is_recorded_and_not_retried(app, fake, core, query):
    session_id = new_id("cs_test")
    sub = fake.put(stripe_fake.subscription(new_id("cus"), fake.prices[PRICE_IDS["pro"]]))
    checkout = {
        "id": session_id,
        "object": "checkout.session",
        "mode": "subscription",
        "customer": sub["customer"],
        "subscription": sub["id"],
        "customer_details": {"email": "not an address"},
        "metadata": {"plan": "pro", "organization_name": "Refused Org"},
        "status": "complete",
        "payment_status": "paid",
    }
    deliver(app.test_client(), stripe_fake.event("checkout.session.completed", checkout))
    run_billing_jobs(app)

    state = mirror(query, session_id)
    assert state["status"] == "refused" and state["error"].startswith("core refused (422)")
    assert state["organization_id"] is None
    assert query(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'billing.provision' AND status = 'todo'"
    ) == [(0,)]
    page = browser(app).get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
    assert "could not set up your organization automatically" in page
    assert "422" not in page and "not an address" not in page  # core's words stay with staff


def provision_jobs(query, session_id: str) -> list:
    return query(
        "SELECT j.status FROM procrastinate_jobs j JOIN subscriptions s ON j.args->>'subscription_id' = s.id::text "
        "WHERE j.task_name = 'billing.provision' AND s.checkout_session_id = %s ORDER BY j.id",
        session_id,
    )


def test_a_wrong_service_token_is_retried_until_it_is_fixed_and_the_buyer_is_provisioned(
    settings_for, config, app, fake, core, core_port, query, database
):
    # Marketing deployed with a CORE_SERVICE_TOKEN core does not accept: core answers 401.
    misconfigured = billing_app(
        settings_for,
        config,
        CORE_API_URL=f"http://127.0.0.1:{core_port}",
        CORE_SERVICE_TOKEN="not-the-token-core-has-0123456789abcdef-0123456789",
    )
    try:
        email, session_id, events = buy(misconfigured, fake, organization="Wrong Token Ltd")
        for event in events:
            deliver(misconfigured.test_client(), event)
        for attempt in (1, 2, 3):  # hours of retries, with backoff: still waiting, never given up
            make_jobs_due(database)
            run_billing_jobs(misconfigured)
            state = mirror(query, session_id)
            assert state["status"] == "pending" and state["attempts"] == attempt
            assert "401" in state["error"] and "credential" in state["error"]  # for staff
            assert provision_jobs(query, session_id)[-1] == ("todo",), "a retry is scheduled"
        assert organization_in_core(query, session_id) == []
        page = browser(misconfigured).get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
        assert "setting things up" in page and "401" not in page and "credential" not in page
    finally:
        close_app(misconfigured)

    # The token is fixed and the worker restarted (the module's app has core's token).
    make_jobs_due(database)
    run_billing_jobs(app)

    ((_, name, plan, owner, _),) = organization_in_core(query, session_id)
    assert (name, plan, owner) == ("Wrong Token Ltd", "pro", email)
    state = mirror(query, session_id)
    assert state["status"] == "provisioned" and state["error"] is None and state["attempts"] == 4
    assert len(emails(query, email, "welcome")) == 1


def test_a_plan_change_core_does_not_accept_for_now_is_retried_not_dropped(
    settings_for, config, app, fake, core, core_port, query, database, marketing_engine
):
    _, session_id = buy_and_process(app, fake, plan="pro", organization="Downgrading Co")
    change_price(app, fake, session_id, PRICE_IDS["starter"])

    misconfigured = billing_app(
        settings_for,
        config,
        CORE_API_URL=f"http://127.0.0.1:{core_port}",
        CORE_SERVICE_TOKEN="not-the-token-core-has-0123456789abcdef-0123456789",
    )
    try:
        run_billing_jobs(misconfigured)
    finally:
        close_app(misconfigured)
    state = mirror(query, session_id)
    assert state["core_plan"] == "pro" and "401" in state["error"] and "retrying" in state["error"]
    assert organization_in_core(query, session_id)[0][2] == "pro"
    ((subscription_id,),) = query("SELECT id FROM subscriptions WHERE checkout_session_id = %s", session_id)
    assert query(
        "SELECT status FROM procrastinate_jobs WHERE task_name = 'billing.sync_plan' "
        "AND args->>'subscription_id' = %s ORDER BY id DESC LIMIT 1",
        str(subscription_id),
    ) == [("todo",)]
    # Were that job lost, the sweep would queue it again: only a 422 is left for staff.
    with database.connect(Role.OWNER) as conn:
        conn.execute(
            "DELETE FROM procrastinate_jobs WHERE args->>'subscription_id' = %s", (str(subscription_id),)
        )
        conn.execute(
            "UPDATE subscriptions SET updated_at = now() - interval '1 hour' WHERE id = %s",
            (subscription_id,),
        )
    with Session(marketing_engine) as session:
        assert jobs.requeue_forgotten(session)["plans"] >= 1
        session.commit()

    run_billing_jobs(app)
    assert organization_in_core(query, session_id)[0][2] == "starter"
    state = mirror(query, session_id)
    assert state["core_plan"] == "starter" and state["error"] is None


def test_no_transaction_is_held_open_while_core_is_called(app, fake, core_app, core_port, query, database):
    seen = []

    def core_that_looks_at_marketing_first(environ, start_response):
        # While core handles the call, marketing's worker is waiting for the answer: any of its
        # transactions still open shows as 'idle in transaction'.
        if environ["PATH_INFO"].startswith("/internal/v1/"):
            with database.connect(Role.MARKETING) as conn:
                seen.append(
                    conn.execute(
                        "SELECT application_name, state, query FROM pg_stat_activity "
                        "WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid() "
                        "AND state LIKE 'idle in transaction%%'"
                    ).fetchall()
                )
        return core_app(environ, start_response)

    with served(core_that_looks_at_marketing_first, core_port):
        # Buying and delivering call Stripe and marketing only; processing provisions: one call to core.
        _, session_id = buy_and_process(app, fake, plan="pro", organization="No Open Transactions")
        change_price(app, fake, session_id, PRICE_IDS["starter"])
        run_billing_jobs(app)  # a plan change: another call

    assert (
        mirror(query, session_id)["status"] == "provisioned"
        and organization_in_core(query, session_id)[0][2] == "starter"
    )
    assert len(seen) == 2 and seen == [[], []]


def test_a_checkout_paid_by_a_delayed_method_is_provisioned_once_the_payment_clears(app, fake, core, query):
    email, session_id, events = buy(app, fake, organization="Slow Bank Ltd")
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    # A bank debit: the checkout completes before the money arrives.
    completed["data"]["object"]["payment_status"] = "unpaid"
    client = app.test_client()
    deliver(client, completed)
    run_billing_jobs(app)

    assert mirror(query, session_id)["status"] == "none"
    assert provision_jobs(query, session_id) == [] and organization_in_core(query, session_id) == []
    page = browser(app).get(f"/billing/success?session_id={session_id}").get_data(as_text=True)
    assert "waiting for your payment" in page
    ((lead_status,),) = query("SELECT status FROM leads WHERE email = %s", email)
    assert lead_status != "won"

    cleared = dict(completed["data"]["object"], payment_status="paid")
    deliver(client, stripe_fake.event("checkout.session.async_payment_succeeded", cleared))
    run_billing_jobs(app)

    ((_, name, _, owner, _),) = organization_in_core(query, session_id)
    assert (name, owner) == ("Slow Bank Ltd", email)
    assert mirror(query, session_id)["status"] == "provisioned"
    assert query("SELECT status FROM leads WHERE email = %s", email) == [("won",)]
    # The completed event delivered again (order is not trusted) changes nothing.
    deliver(client, stripe_fake.event("checkout.session.completed", completed["data"]["object"]))
    run_billing_jobs(app)
    assert mirror(query, session_id)["status"] == "provisioned" and len(emails(query, email, "welcome")) == 1
