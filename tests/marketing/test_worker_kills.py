"""`marketing worker` killed with SIGKILL in the middle of each kind of job it runs, as deployed (a
real process, the production entry point): sending an email, processing a Stripe event, provisioning
an organization in core, reporting usage to Stripe's meter. Another worker takes the job over, and
it is done once: one message delivered, each event applied once, one organization, one meter event.

A dead worker's job goes back to the queue once its heartbeat is older than
nectar.shared.jobs.STALLED_AFTER_SECONDS (checked every ten seconds); a message it was sending is
claimed again as soon as its sender's heartbeat is that old (outbox.py)."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy.orm import Session

from nectar.core.app import create_app as create_core_app
from nectar.marketing import main as marketing_binary  # noqa: F401 - packs the worker command run below
from nectar.marketing.billing.queue import QUEUE, REPORT_USAGE
from nectar.shared.config import Role, Service
from nectar.shared.database import db
from nectar.shared.jobs import job_statement
from nectar.shared.mail import Email, queue_email
from tests.marketing.billing_helpers import (
    SERVICE_TOKEN,
    WEBHOOK_SECRET,
    billing_app,
    buy,
    close_app,
    deliver,
    free_port,
    served,
)
from tests.marketing.stripe_fake import StripeFake, new_id
from tests.marketing.test_usage_reports import METER, _paying_organization, _used
from tests.workers import wait_for, workers

pytestmark = pytest.mark.timeout(120)

PRICE_IDS = {"starter": "price_1StarterMonthly", "pro": "price_1ProMonthly"}
# A dead worker's job is back in the queue within STALLED_AFTER_SECONDS plus one check (ten
# seconds); the rest is margin for a loaded machine.
TAKEOVER_SECONDS = 45


@pytest.fixture(scope="module")
def fake():
    fake = StripeFake().start()
    fake.meters.add(METER)
    for plan, price_id in PRICE_IDS.items():
        fake.add_price(price_id, 2900 if plan == "starter" else 9900)
    yield fake
    fake.stop()


class HeldProvisioning:
    """Core's app, whose next call to create an account, once `hold_next()` was called, waits
    until `release()` before core handles it: the caller is killed meanwhile, and core then makes
    the account all the same. `accounts_calls` counts the calls since `hold_next()`."""

    def __init__(self, app):
        self.app = app
        self.arrived, self._released = threading.Event(), threading.Event()
        self._armed = False
        self.accounts_calls = 0

    def hold_next(self) -> None:
        self.arrived.clear()
        self._released.clear()
        self._armed, self.accounts_calls = True, 0

    def release(self) -> None:
        self._released.set()

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"].endswith("/accounts"):
            self.accounts_calls += 1
            if self._armed:
                self._armed = False
                self.arrived.set()
                self._released.wait(30)
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def core(settings_for):
    """Core's real app served on loopback, its account creation held once (HeldProvisioning)."""
    app = create_core_app(settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN))
    held = HeldProvisioning(app)
    with served(held, free_port()) as url:
        yield url, held
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def billing(settings_for, fake, core):
    """Marketing's app (its checkout and webhook) and the environment of its worker: the fake
    Stripe, core, and no SMTP server (mail stays in the outbox, where it is counted)."""
    from nectar.marketing.billing.config import BillingConfig

    url, _held = core
    config = BillingConfig(
        secret_key=fake.secret_key, webhook_secret=WEBHOOK_SECRET, price_ids=PRICE_IDS, api_base=fake.url
    )
    app = billing_app(settings_for, config, CORE_API_URL=url, CORE_SERVICE_TOKEN=SERVICE_TOKEN)
    environ = {
        "STRIPE_SECRET_KEY": fake.secret_key,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": fake.url,
        "STRIPE_PRICE_STARTER": PRICE_IDS["starter"],
        "STRIPE_PRICE_PRO": PRICE_IDS["pro"],
        "CORE_API_URL": url,
        "CORE_SERVICE_TOKEN": SERVICE_TOKEN,
    }
    yield app, environ
    close_app(app)


def _one(database, sql: str, *params):
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(sql, params).fetchone()


def _all(database, sql: str, *params) -> list:
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(sql, params).fetchall()


def _message(database, message_id) -> tuple:
    return _one(database, "SELECT status, attempts, last_error FROM email_outbox WHERE id = %s", message_id)


def _checkout_and_webhooks(app, fake) -> tuple[str, str, list[dict]]:
    """A customer pays on Stripe and Stripe's events reach the webhook (stored, jobs queued)."""
    email, session_id, events = buy(app, fake, plan="pro", organization=f"Kill {uuid.uuid4().hex[:6]}")
    client = app.test_client()
    for event in events:
        assert deliver(client, event).status_code == 200
    return email, session_id, events


def _provisioned(database, session_id: str) -> tuple | None:
    return _one(
        database,
        "SELECT provisioning_status, organization_id FROM subscriptions WHERE checkout_session_id = %s "
        "AND provisioning_status = 'provisioned'",
        session_id,
    )


def _done_once(database, session_id: str, email: str) -> None:
    """One organization for the checkout, made once, owned by the buyer; one welcome email and one
    set-password email from core; one provisioning job."""
    orgs = _all(
        database,
        "SELECT o.id, u.email FROM organizations o JOIN memberships m ON m.org_id = o.id AND m.role = 'owner' "
        "JOIN users u ON u.id = m.user_id WHERE o.external_ref = %s",
        session_id,
    )
    assert [owner for _, owner in orgs] == [email], orgs
    assert _provisioned(database, session_id)[1] == orgs[0][0]
    mail = _all(database, "SELECT category FROM email_outbox WHERE to_address = %s ORDER BY category", email)
    assert [category for (category,) in mail] == ["account.set_password", "welcome"], mail
    (subscription_id,) = _one(
        database, "SELECT id FROM subscriptions WHERE checkout_session_id = %s", session_id
    )
    jobs = _all(
        database,
        "SELECT status FROM procrastinate_jobs WHERE task_name = 'billing.provision' "
        "AND args->>'subscription_id' = %s",
        str(subscription_id),
    )
    assert [str(status) for (status,) in jobs] == ["succeeded"], jobs


def test_a_worker_killed_while_stripe_answers_an_events_read_leaves_each_event_applied_once(
    database, fake, billing, core
):
    app, environ = billing
    email, session_id, events = _checkout_and_webhooks(app, fake)
    subscription = fake.objects[fake.objects[session_id]["subscription"]]
    held = fake.answer_next_read_slowly(subscription["id"], subscription)  # the first event's re-read

    def applied() -> list:
        return _all(
            database,
            "SELECT attempts, last_error FROM stripe_events WHERE id = ANY(%s) AND processed_at IS NOT NULL",
            [event["id"] for event in events],
        )

    with workers("marketing", database.environ(**environ)) as start:
        first = start()
        assert held.started.wait(30), first.output
        first.kill()  # inside the event's transaction, its row locked, waiting for Stripe
        held.release()
        start()
        # The other events are applied meanwhile; the killed one's job comes back once its worker is stale.
        wait_for(lambda: len(applied()) == len(events), TAKEOVER_SECONDS, "every event to be applied")
        wait_for(
            lambda: _provisioned(database, session_id), TAKEOVER_SECONDS, "the checkout to be provisioned"
        )
    assert applied() == [(1, None)] * len(events)  # each applied once; the killed try left nothing
    assert _one(
        database, "SELECT count(*) FROM subscriptions WHERE stripe_subscription_id = %s", subscription["id"]
    ) == (1,)
    _done_once(database, session_id, email)


def test_a_worker_killed_while_core_provisions_leaves_one_organization(database, fake, billing, core):
    app, environ = billing
    _url, held = core
    email, session_id, _events = _checkout_and_webhooks(app, fake)
    held.hold_next()
    with workers("marketing", database.environ(**environ)) as start:
        first = start()
        assert held.arrived.wait(30), first.output
        first.kill()  # its call to core is on the wire; core answers nobody
        held.release()  # core makes the organization now, for a caller that is gone
        start()
        wait_for(
            lambda: _provisioned(database, session_id), TAKEOVER_SECONDS, "the checkout to be provisioned"
        )
    assert held.accounts_calls == 2  # the killed call and the retry, which found the first one's organization
    _done_once(database, session_id, email)


def test_a_worker_killed_while_stripe_answers_a_usage_report_leaves_one_meter_event(database, fake, billing):
    _app, environ = billing
    customer = fake.put({"id": new_id("cus"), "object": "customer"})["id"]
    org = _paying_organization(database, customer)
    _used(database, org, 2, 40)  # a day that is over, with 40 runs
    held = fake.hold_next_answer("POST", "/v1/billing/meter_events")
    with database.connect(Role.MARKETING, autocommit=True) as conn:  # the hourly job, queued now
        conn.execute(*job_statement(REPORT_USAGE, {"timestamp": 0}, queue=QUEUE))

    def reported() -> list:
        return _all(
            database, "SELECT value, status FROM usage_reports WHERE organization_id = %s AND value > 0", org
        )

    with workers("marketing", database.environ(**environ)) as start:
        first = start()
        assert held.started.wait(30), first.output
        first.kill()  # Stripe has the meter event; its answer never reaches the worker
        held.release()
        start()
        wait_for(reported, TAKEOVER_SECONDS, "the day to be reported")
    assert reported() == [(40, "reported")]
    sent = [e for e in fake.meter_events if e["payload"]["stripe_customer_id"] == customer]
    assert [e["payload"]["value"] for e in sent] == ["40"]  # one event: the retry's answer was replayed
    assert (
        len(
            [
                c
                for c in fake.calls("POST", "/v1/billing/meter_events")
                if c.params["payload"]["stripe_customer_id"] == customer
            ]
        )
        == 2
    )


@pytest.mark.usefixtures("empty_outbox")
def test_a_worker_killed_before_the_smtp_server_took_a_message_leaves_one_delivered(
    database, marketing_engine, mail_server
):
    address = f"kill-{uuid.uuid4().hex[:8]}@example.com"
    with Session(marketing_engine) as session, session.begin():
        message_id = queue_email(
            session, Email(to=address, subject="Once", body_text="Only once.", category="test")
        )
    held = mail_server.hold_next_message()
    with workers("marketing", database.environ(**mail_server.environ())) as start:
        first = start()
        assert held.arrived.wait(30), first.output
        first.kill()  # the message is sent; the server has not said it took it
        held.release()
        start()
        wait_for(lambda: _message(database, message_id)[0] == "sent", TAKEOVER_SECONDS, "the message sent")
    [received] = mail_server.to(address)
    assert received.message["Message-ID"].startswith(f"<{message_id}@")
    # The abandoned try counts as an attempt, and the message was sent by the second.
    assert _message(database, message_id) == ("sent", 2, None)
