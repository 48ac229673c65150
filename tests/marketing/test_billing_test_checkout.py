"""The offline default: with no Stripe keys the pricing page offers a test checkout whose completion
sends signed, Stripe-shaped events over real HTTP to the served marketing app's own /stripe/webhook,
where the same verification and processing code provisions the organization in core."""

from __future__ import annotations

import re
import stat
import uuid

import pytest

from nectar.core.app import create_app as create_core_app
from nectar.marketing.app import create_app
from nectar.marketing.billing.config import (
    DEV_SECRET_FILE,
    BillingConfig,
    billing_config,
    configure_billing,
    development_webhook_secret,
)
from nectar.marketing.billing.sandbox import read_session
from nectar.shared.config import Service
from nectar.shared.database import db
from tests.marketing.billing_helpers import (
    SERVICE_TOKEN,
    billing_app,
    browser,
    close_app,
    free_port,
    make_jobs_due,
    run_billing_jobs,
    served,
)


@pytest.fixture(scope="module")
def core_url(settings_for):
    app = create_core_app(settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN))
    with served(app) as url:
        yield url
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="module")
def marketing(settings_for, core_url, var_dir):
    """Marketing served on loopback, as its own public URL, with no Stripe variables at all."""
    holder = {}
    with served(lambda environ, start: holder["app"](environ, start)) as url:
        settings = settings_for(
            Service.MARKETING,
            MARKETING_PUBLIC_URL=url,
            CORE_API_URL=core_url,
            CORE_SERVICE_TOKEN=SERVICE_TOKEN,
            NECTAR_VAR_DIR=str(var_dir),
        )
        app = create_app(settings)  # billing reads the (Stripe-free) environment, as in development
        holder["app"] = app
        yield app
        close_app(app)


def start_test_checkout(app, plan="pro", organization="Offline Labs"):
    visitor = browser(app)
    email = f"offline-{uuid.uuid4().hex[:10]}@example.com"
    form = {"plan": plan, "email": email, "organization_name": organization, "nonce": uuid.uuid4().hex}
    response = visitor.post("/billing/checkout", form)
    assert response.status_code == 303, response.get_data(as_text=True)
    return visitor, email, form, response.headers["Location"]


def drain(app) -> None:
    # Delivery queues processing, which queues provisioning: run until nothing is left.
    for _ in range(4):
        run_billing_jobs(app)


def test_the_pricing_page_labels_the_test_checkout(marketing):
    html = browser(marketing).get("/pricing").get_data(as_text=True)
    assert "Test checkout (no card, no charge)." in html
    assert html.count(">Test checkout (no card, no charge)</button>") == 2


def test_a_test_checkout_goes_through_the_webhook_and_provisions_the_organization(marketing, query, var_dir):
    visitor, email, form, location = start_test_checkout(marketing, plan="pro", organization="Offline Labs")
    assert re.fullmatch(r"/billing/test-checkout/[\w.-]+", location)

    page = visitor.get(location)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for text in ("Test checkout (no card, no charge).", "Pro", "99.00 USD / month", email, "Offline Labs"):
        assert text in html
    # A double click on the pricing page leads to the same test session (its signed address carries
    # the time of signing, so compare what it opens).
    again = visitor.post("/billing/checkout", form).headers["Location"]
    with marketing.app_context():
        secret = billing_config().webhook_secret
    assert read_session(secret, again.rsplit("/", 1)[1]) == read_session(secret, location.rsplit("/", 1)[1])

    paid = visitor.post(location)
    assert paid.status_code == 303
    success = paid.headers["Location"]
    session_id = re.search(r"session_id=(cs_test_\w+)$", success).group(1)
    assert success.startswith(marketing.config["NECTAR_SETTINGS"].public_url + "/billing/success")
    assert "setting things up" in visitor.get(success).get_data(as_text=True)

    drain(marketing)

    ((subscription_id,),) = query(
        "SELECT stripe_subscription_id FROM subscriptions WHERE checkout_session_id = %s", session_id
    )
    events = query(
        "SELECT type, processed_at IS NOT NULL, payload->>'api_version' FROM stripe_events "
        "WHERE payload::text LIKE %s ORDER BY type",
        f"%{subscription_id}%",
    )
    assert [(kind, done) for kind, done, _ in events] == [
        ("checkout.session.completed", True),
        ("customer.subscription.created", True),
        ("invoice.paid", True),
    ]
    assert {version for *_, version in events} == {"2025-10-29.clover"}
    ((status, plan, price_id, amount, org_id, provisioning, paid_at),) = query(
        "SELECT status, plan, stripe_price_id, unit_amount, organization_id, provisioning_status, last_paid_at "
        "FROM subscriptions WHERE checkout_session_id = %s",
        session_id,
    )
    assert (status, plan, price_id, amount, provisioning) == (
        "active",
        "pro",
        "price_test_pro",
        9900,
        "provisioned",
    )
    assert paid_at is not None
    assert query("SELECT name, plan FROM organizations WHERE id = %s", org_id) == [("Offline Labs", "pro")]
    assert len(query("SELECT 1 FROM email_outbox WHERE to_address = %s AND category = 'welcome'", email)) == 1

    ready = visitor.get(success).get_data(as_text=True)
    assert "Your organization is ready" in ready and "Check your email" in ready

    # The development webhook secret lives in the var directory, private to its owner.
    secret_file = var_dir / DEV_SECRET_FILE
    assert secret_file.read_text().startswith("whsec_dev_")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    # Completing the same test session again sends the same events: stored once, nothing new.
    visitor.post(location)
    drain(marketing)
    assert query("SELECT count(*) FROM organizations WHERE name = 'Offline Labs'") == [(1,)]
    assert len(query("SELECT 1 FROM subscriptions WHERE checkout_session_id = %s", session_id)) == 1


def test_the_portal_link_explains_there_is_no_stripe_portal_in_test_mode(marketing, query):
    visitor, email, _, location = start_test_checkout(marketing, plan="starter", organization="Portal Check")
    visitor.post(location)
    drain(marketing)

    assert visitor.post("/billing/portal", {"email": email}).status_code == 200
    ((body,),) = query(
        "SELECT body_text FROM email_outbox WHERE to_address = %s AND category = 'billing.portal_link'", email
    )
    link = re.search(r"https?://[^/\s]+(/billing/portal/\S+)", body).group(1)
    opened = visitor.post(link)
    assert opened.status_code == 503
    assert "runs the test checkout without Stripe keys" in opened.get_data(as_text=True)


def test_completing_without_the_csrf_token_sends_nothing(marketing, query):
    _, email, _, location = start_test_checkout(marketing)
    response = marketing.test_client().post(location)
    assert response.status_code == 400 and "The CSRF token is missing." in response.get_data(as_text=True)
    assert (
        query(
            "SELECT 1 FROM procrastinate_jobs WHERE task_name = 'billing.deliver_sandbox_events' "
            "AND args->'checkout'->>'email' = %s",
            email,
        )
        == []
    )


def test_a_forged_or_altered_test_session_is_refused(marketing):
    visitor, _, _, location = start_test_checkout(marketing)
    token = location.rsplit("/", 1)[1]
    altered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for path in (f"/billing/test-checkout/{altered}", "/billing/test-checkout/nothing"):
        response = visitor.get(path)
        assert response.status_code == 400 and "Start again from the pricing page" in response.get_data(
            as_text=True
        )


def test_events_are_redelivered_until_the_webhook_accepts_them(
    settings_for, core_url, var_dir, query, database
):
    # Marketing's public address answers nothing: the delivery job keeps the events and retries.
    config = BillingConfig(webhook_secret=development_webhook_secret(var_dir))
    app = billing_app(
        settings_for,
        config,
        MARKETING_PUBLIC_URL=f"http://127.0.0.1:{free_port()}",
        CORE_API_URL=core_url,
        CORE_SERVICE_TOKEN=SERVICE_TOKEN,
        NECTAR_VAR_DIR=str(var_dir),
    )
    try:
        visitor, email, _, location = start_test_checkout(app, plan="starter", organization="Retry Works")
        visitor.post(location)
        run_billing_jobs(app)
        ((attempts, status),) = query(
            "SELECT attempts, status FROM procrastinate_jobs WHERE task_name = 'billing.deliver_sandbox_events' "
            "AND args->'checkout'->>'email' = %s",
            email,
        )
        assert (attempts, status) == (1, "todo")

        # The site comes up at that address.
        port = int(app.config["NECTAR_SETTINGS"].public_url.rsplit(":", 1)[1])
        with served(app, port):
            make_jobs_due(database)
            drain(app)
        assert query("SELECT plan FROM organizations WHERE name = 'Retry Works'") == [("starter",)]
    finally:
        close_app(app)


def test_with_a_stripe_key_the_test_checkout_is_off(settings_for, marketing):
    visitor, _, _, location = start_test_checkout(marketing)
    app = create_app(settings_for(Service.MARKETING))
    configure_billing(app, BillingConfig(secret_key="sk_test_configured", webhook_secret="whsec_x"))
    try:
        response = browser(app).get(location)
        assert response.status_code == 404
        assert "no card, no charge" not in browser(app).get("/pricing").get_data(as_text=True)
    finally:
        close_app(app)
