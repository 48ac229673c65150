"""A database outage under running services: PostgreSQL stopped the hard way (`pg_ctl stop -m
immediate`), kept down, then started again. The three workers (real processes) keep running and take
work queued after the restart by themselves, logging the outage once and its end once; the web
answers 503 with Retry-After meanwhile (a page to browsers, a problem document to API clients), and
answers normally again afterwards.

The server is this module's own, in a temporary directory: stopping the shared test server would
fail every other test process."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import uuid
from datetime import UTC, datetime

import pyotp
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from nectar.admin import main as admin_main  # noqa: F401 - packs the worker commands run below
from nectar.admin.app import create_app as create_admin_app
from nectar.admin.staff import service as staff_service
from nectar.core import main as core_main  # noqa: F401
from nectar.core.app import create_app as create_core_app
from nectar.marketing import main as marketing_main  # noqa: F401
from nectar.marketing.app import create_app as create_marketing_app
from nectar.marketing.billing.config import BillingConfig, configure_billing
from nectar.shared.config import DATABASE_NAME, Role, Service, load_settings
from nectar.shared.database import db
from nectar.shared.encryption import key_ring
from nectar.shared.jobs import enqueue
from nectar.shared.web import PROBLEM_JSON
from tests.browser import Browser
from tests.conftest import DatabaseUnderTest, own_server
from tests.core.conftest import Browser as CoreBrowser
from tests.core.test_api import _new_key
from tests.marketing.billing_helpers import WEBHOOK_SECRET, deliver
from tests.serving import free_port
from tests.workers import WorkerProcess

pytestmark = pytest.mark.timeout(240)

OUTAGE_SECONDS = 10
ROLES = {Service.CORE: Role.APP, Service.MARKETING: Role.MARKETING, Service.ADMIN: Role.ADMIN}
LOST, BACK = "lost the database", "the database answers again"


@pytest.fixture(scope="module")
def own_database():
    # Durable, as production is: an immediate stop must lose nothing that was committed.
    with own_server("outage") as database:
        yield database


class Outage:
    """Stops the module's server as a crash would, and starts it again on the same port."""

    def __init__(self, database: DatabaseUnderTest):
        self.server = database.server

    def __enter__(self):
        self.server.stop(immediate=True)
        return self

    def __exit__(self, *exc):
        self.server.start()


def _queue_upkeep_job(database: DatabaseUnderTest, service: Service, marker: int) -> None:
    """Queues the service's own job that deletes old finished jobs, as its web code would queue work."""
    engine = create_engine(database.url(ROLES[service]))
    try:
        with Session(engine) as session, session.begin():
            enqueue(session, f"{service}.remove_old_jobs", {"timestamp": marker}, queue=str(service))
    finally:
        engine.dispose()


def _job_status(database: DatabaseUnderTest, service: Service, marker: int) -> str | None:
    with database.connect(Role.OWNER) as conn:
        row = conn.execute(
            "SELECT status FROM procrastinate_jobs WHERE task_name = %s AND args = %s::jsonb",
            (f"{service}.remove_old_jobs", json.dumps({"timestamp": marker})),
        ).fetchone()
    return row and str(row[0])


def test_every_worker_keeps_running_through_an_outage_and_takes_work_queued_after_it(own_database):
    env = {**os.environ, **own_database.environ(), "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [WorkerProcess(service, env) for service in Service]
    try:
        for worker in workers:
            worker.wait_for("Starting worker on queues", timeout=60)
        with Outage(own_database):
            time.sleep(OUTAGE_SECONDS)
            for worker in workers:
                assert worker.process.poll() is None, f"{worker.service} worker exited:\n{worker.output}"
        marker = int(time.time())
        for service in Service:
            _queue_upkeep_job(own_database, service, marker)
        # Backoff is at most 30 s between attempts; the first comes within 15 s of the restart here.
        deadline = time.monotonic() + 60
        pending = set(Service)
        while pending and time.monotonic() < deadline:
            pending = {s for s in pending if _job_status(own_database, s, marker) != "succeeded"}
            time.sleep(0.5)
        assert not pending, "\n".join(w.output for w in workers if w.service in pending)
        for worker in workers:
            worker.wait_for(BACK, timeout=5)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.process.wait(30)
    for worker in workers:
        output = worker.output
        assert worker.process.returncode == 0, output
        assert output.count(LOST) == 1 and output.count(BACK) == 1, output
        # The outage is said once: no traceback, no warning for every failed attempt; a job it
        # interrupted (a periodic one may be running) is one line.
        assert "Traceback" not in output and " ERROR " not in output, output
        warnings = [line for line in output.splitlines() if " WARNING " in line and LOST not in line]
        assert all("SMTP_HOST is not set" in line or "ended with status" in line for line in warnings), output


def test_a_worker_waiting_for_the_database_stops_at_once_on_ctrl_c(own_database):
    env = {**os.environ, **own_database.environ(), "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = WorkerProcess(Service.ADMIN, env)
    try:
        worker.wait_for("Starting worker on queues", timeout=60)
        with Outage(own_database):
            worker.wait_for(LOST, timeout=30)
            worker.process.send_signal(signal.SIGINT)
            # Generous: what matters is that it does not wait for the database to come back.
            assert worker.process.wait(15) == 0, worker.output
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


# --- the web -------------------------------------------------------------------------------------

ADMIN_TOKEN = "test-admin-token-0123456789abcdef-0123456789abc"
CONTACT_EMAIL = f"ada-{uuid.uuid4().hex[:8]}@example.com"
HELLO = {"trigger": {"type": "http"}, "steps": [{"id": "hi", "type": "respond", "status": 200, "body": "hi"}]}


def _settings(database: DatabaseUnderTest, service: Service, **extra: str):
    return load_settings(service, database.environ(CORE_ADMIN_TOKEN=ADMIN_TOKEN, **extra))


@pytest.fixture(scope="module")
def apps(own_database):
    made = {
        Service.CORE: create_core_app(_settings(own_database, Service.CORE)),
        Service.MARKETING: create_marketing_app(_settings(own_database, Service.MARKETING)),
        Service.ADMIN: create_admin_app(_settings(own_database, Service.ADMIN)),
    }
    configure_billing(made[Service.MARKETING], BillingConfig(webhook_secret=WEBHOOK_SECRET))
    for app in made.values():  # where tests read the outbox: this module's server
        app.config["NECTAR_TEST_DATABASE"] = own_database
    yield made
    for app in made.values():
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="module")
def core_owner(apps):
    """A signed-in owner of an organization with an API key and a public endpoint GET /hello."""
    browser = CoreBrowser(apps[Service.CORE])
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    workflow = browser.api(
        "POST", "/api/v1/workflows", token=token, json={"name": "hello", "definition": HELLO}
    )
    assert workflow.status_code == 201, workflow.json
    endpoint = browser.api(
        "POST",
        "/api/v1/endpoints",
        token=token,
        json={"method": "GET", "path": "/hello", "workflow_id": workflow.json["id"], "auth": "public"},
    )
    assert endpoint.status_code == 201, endpoint.json
    return browser, org, token


@pytest.fixture(scope="module")
def staff(apps, own_database):
    """A superadmin signed in to admin through its forms (password, then TOTP)."""
    engine = create_engine(own_database.url(Role.ADMIN))
    email, password = f"staff-{uuid.uuid4().hex[:8]}@staff.example.com", "staff password long enough 42"
    with Session(engine) as session, session.begin():
        member = staff_service.create_staff(session, email, "superadmin", password, "Staff")
        secret = staff_service.begin_totp_enrolment(
            key_ring(apps[Service.ADMIN].config["NECTAR_SETTINGS"]), member
        )
        member.totp_enabled_at = datetime.now(UTC)
    engine.dispose()
    browser = Browser(apps[Service.ADMIN], token_page="/login")
    assert browser.post("/login", {"email": email, "password": password}).status_code == 302
    assert browser.post("/login/totp", {"code": pyotp.TOTP(secret).now()}).headers["Location"] == "/"
    return browser


def _stripe_event() -> dict:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "invoice.paid",
        "created": int(time.time()),
        "data": {"object": {"id": f"in_{uuid.uuid4().hex[:12]}", "object": "invoice"}},
    }


def _requests(apps, core_owner, staff):
    """Each kind of request, by name: a callable that sends it and returns the response, and
    whether a browser (True: the error page) or an API client (False: a problem document) sent it."""
    browser, org, token = core_owner
    marketing = Browser(apps[Service.MARKETING], token_page="/contact")
    contact_token = marketing.csrf_token()  # read now: the contact page is a page like any other
    contact = {
        "csrf_token": contact_token,
        "name": "Ada Visitor",
        "email": CONTACT_EMAIL,
        "company": "Analytical",
        "message": "Please call me back about the enterprise plan.",
    }
    marketing_client = apps[Service.MARKETING].test_client()
    return {
        "core page": (lambda: browser.get("/dashboard"), True),
        "core API": (lambda: browser.api("GET", "/api/v1/workflows", token=token), False),
        "tenant endpoint": (lambda: browser.client.get(f"/e/{org}/hello"), False),
        "marketing form": (lambda: marketing.client.post("/contact", data=contact), True),
        "Stripe webhook": (lambda: deliver(marketing_client, _stripe_event()), False),
        "admin page": (lambda: staff.get("/"), True),
    }


def test_every_service_answers_503_with_retry_after_during_an_outage_and_normally_after(
    own_database, apps, core_owner, staff
):
    requests = _requests(apps, core_owner, staff)
    # The tenant endpoint is first called during the outage: a route this process has read
    # already is answered from memory, and its run written once the database is back.
    warm = {name: send() for name, (send, _page) in requests.items() if name != "tenant endpoint"}
    assert {name: r.status_code for name, r in warm.items()} == {
        "core page": 200,
        "core API": 200,
        "marketing form": 302,
        "Stripe webhook": 200,
        "admin page": 200,
    }, {name: r.get_data(as_text=True)[:300] for name, r in warm.items()}

    with Outage(own_database):
        for name, (send, page) in requests.items():
            answer = send()
            assert answer.status_code == 503, (name, answer.status_code, answer.get_data(as_text=True)[:500])
            assert answer.headers["Retry-After"].isdigit(), name
            if page:
                assert answer.mimetype == "text/html", name
                assert re.search(r"503 · Service Unavailable", answer.get_data(as_text=True)), name
            else:
                assert answer.mimetype == PROBLEM_JSON, name
                assert answer.json["status"] == 503 and "database" in answer.json["detail"], name

    after = {name: send() for name, (send, _page) in requests.items()}
    assert {name: r.status_code for name, r in after.items()} == {
        "core page": 200,
        "core API": 200,
        "tenant endpoint": 200,
        "marketing form": 302,
        "Stripe webhook": 200,
        "admin page": 200,
    }, {name: r.get_data(as_text=True)[:300] for name, r in after.items()}
    assert after["tenant endpoint"].get_data(as_text=True) == "hi"
    with own_database.connect(Role.ADMIN) as conn:
        inquiries = conn.execute(
            "SELECT count(*) FROM lead_inquiries i JOIN leads l ON l.id = i.lead_id WHERE l.email = %s",
            (CONTACT_EMAIL,),
        ).fetchone()[0]
    assert (
        inquiries == 2
    ), "the inquiries sent before and after the outage are stored; the one during it is not"


def test_a_service_that_cannot_reach_its_database_at_all_answers_503(settings_for, database):
    """The database's address refuses connections (as when PostgreSQL is down for good): the same
    answer, from the same handler, whatever the request."""
    closed = f"postgresql://nectar_app_user:x@127.0.0.1:{free_port()}/{DATABASE_NAME}"
    app = create_core_app(settings_for(Service.CORE, DATABASE_URL=closed))
    client = app.test_client()
    key = f"nsk_{uuid.uuid4().hex}_{'x' * 43}"  # well formed, so it is looked up
    api = client.get("/api/v1/workflows", headers={"Authorization": f"Bearer {key}"})
    assert api.status_code == 503 and api.mimetype == PROBLEM_JSON and "Retry-After" in api.headers
    call = client.get(f"/e/{uuid.uuid4()}/anything")
    assert call.status_code == 503 and call.mimetype == PROBLEM_JSON and "Retry-After" in call.headers
    with app.app_context():
        db.engine.dispose()
