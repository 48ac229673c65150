"""What the billing tests share: a marketing app with a chosen billing configuration, the worker
run until billing's queue is empty, signed webhook deliveries, a purchase on the fake Stripe, and apps
served on loopback."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import create_engine, text

from nectar.marketing.app import create_app
from nectar.marketing.billing import jobs
from nectar.marketing.billing.config import BillingConfig, billing_config, configure_billing
from nectar.marketing.billing.queue import QUEUE
from nectar.marketing.jobs import worker_engine
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from nectar.shared.jobs import job_app
from tests.browser import Browser
from tests.marketing import stripe_fake
from tests.marketing.stripe_fake import StripeFake, sign
from tests.serving import free_port, served  # noqa: F401 - re-exported for the billing tests

WEBHOOK_SECRET = "whsec_test_0123456789abcdefghijklmnopqrstuv"
SERVICE_TOKEN = "test-service-token-0123456789abcdef-0123456789"


def billing_app(settings_for, config: BillingConfig, **environ: str):
    """The marketing app on the test database with `config` as its billing configuration."""
    app = create_app(settings_for(Service.MARKETING, **environ))
    configure_billing(app, config)
    return app


def close_app(app) -> None:
    with app.app_context():
        db.engine.dispose()


def browser(app) -> Browser:
    return Browser(app, token_page="/pricing")


def run_billing_jobs(app, concurrency: int = 1) -> None:
    """Runs billing's tasks until nothing is due, as `marketing.pex worker --once` would."""
    settings = app.config["NECTAR_SETTINGS"]
    engine = worker_engine(settings.database_url)
    try:
        with app.app_context():
            jobs.bind(engine, settings, billing_config())
        worker = job_app(settings.database_url, jobs.blueprint)
        worker.run_worker(queues=[QUEUE], wait=False, install_signal_handlers=False, concurrency=concurrency)
    finally:
        engine.dispose()


def make_jobs_due(database) -> int:
    """Time passes: retries waiting for their backoff become due now."""
    engine = create_engine(database.url(Role.MARKETING))
    try:
        with engine.begin() as conn:
            return conn.execute(
                text(
                    "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo' AND queue_name = :q"
                ),
                {"q": QUEUE},
            ).rowcount
    finally:
        engine.dispose()


def deliver(client, event: dict, secret: str = WEBHOOK_SECRET, *, timestamp: int | None = None, header=None):
    """POSTs `event` to the webhook endpoint as Stripe does: raw JSON, signed."""
    payload = json.dumps(event).encode()
    headers = {"Content-Type": "application/json"}
    signature = sign(payload, secret, timestamp) if header is None else header
    if signature:
        headers["Stripe-Signature"] = signature
    return client.post("/stripe/webhook", data=payload, headers=headers)


def buy(app, fake: StripeFake, plan="pro", organization="Acme Robotics") -> tuple[str, str, list[dict]]:
    """A visitor checks out on the pricing page and pays on Stripe (the fake): returns the email,
    the Checkout Session id and the events Stripe sends."""
    email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
    form = {"plan": plan, "email": email, "organization_name": organization, "nonce": uuid.uuid4().hex}
    response = browser(app).post("/billing/checkout", form)
    assert response.status_code == 303, response.get_data(as_text=True)
    session_id = response.headers["Location"].rsplit("/", 1)[1]
    return email, session_id, fake.complete_checkout(session_id)


def buy_and_process(app, fake: StripeFake, plan="pro", organization="Acme Robotics") -> tuple[str, str]:
    """`buy`, then Stripe's events reach the webhook (each accepted) and the worker runs once:
    returns the email and the Checkout Session id."""
    email, session_id, events = buy(app, fake, plan, organization)
    client = app.test_client()
    for event in events:
        assert deliver(client, event).status_code == 200
    run_billing_jobs(app)
    return email, session_id


def change_price(app, fake: StripeFake, session_id: str, price_id: str) -> dict:
    """The customer switches plans in Stripe's portal: Stripe holds the new price and sends
    customer.subscription.updated. Returns the subscription as Stripe has it."""
    subscription = fake.objects[fake.objects[session_id]["subscription"]]
    subscription["items"]["data"][0]["price"] = fake.prices[price_id]
    response = deliver(app.test_client(), stripe_fake.event("customer.subscription.updated", subscription))
    assert response.status_code == 200
    return subscription
