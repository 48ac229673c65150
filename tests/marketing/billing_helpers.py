"""What the billing tests share: a marketing app with a chosen billing configuration, the worker
run until billing's queue is empty, signed webhook deliveries, and apps served on loopback."""

from __future__ import annotations

import json

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
from tests.marketing.stripe_fake import sign
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
