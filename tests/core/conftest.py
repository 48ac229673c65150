"""Core test helpers: an app on the test database, and a browser-like client that carries the CSRF
token the way a page's form would."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy.orm import Session

from nectar.core.app import create_app
from nectar.schema.models import Organization
from nectar.shared.config import Role, Service
from nectar.shared.database import db, scope_session
from nectar.shared.embedded_postgres import ensure_embedded_server
from tests.browser import Browser as BaseBrowser
from tests.conftest import DatabaseUnderTest, test_server_dir

SERVICE_TOKEN = "test-service-token-0123456789abcdef-0123456789"
PASSWORD = "correct horse battery staple"


def _serve_then_dispose(app):
    yield app
    from nectar.shared.database import db

    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def core_app(settings_for):
    yield from _serve_then_dispose(create_app(settings_for(Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN)))


@pytest.fixture(scope="module")
def local_outbound_app(settings_for):
    """Core whose workflows may call servers on this machine (the tests' upstreams)."""
    settings = settings_for(
        Service.CORE, CORE_SERVICE_TOKEN=SERVICE_TOKEN, NECTAR_OUTBOUND_ALLOWLIST="127.0.0.1/32"
    )
    yield from _serve_then_dispose(create_app(settings))


class Browser(BaseBrowser):
    """A browser on core with the account steps tests repeat."""

    def sign_up(self, email=None, password=PASSWORD, name="Test Person"):
        """Signs up as a person would: the address, then the emailed link; signed in after it."""
        email = email or unique_email()
        started = self.post("/signup", {"email": email})
        assert started.status_code == 200, started.get_data(as_text=True)
        link = link_in(newest_email(self.app, email, "account.signup")["body"])
        finished = self.post(link, {"display_name": name, "password": password, "confirm": password})
        assert finished.status_code == 302, finished.get_data(as_text=True)
        return email

    def sign_in(self, email, password=PASSWORD):
        return self.post("/login", {"email": email, "password": password})

    def create_org(self, name=None, *, api_keys=True):
        """A new organization on the free plan. Unless `api_keys` is False it is granted API keys
        (a staff override, as admin's organization page grants), so tests of everything else can
        call the API with a key and keep the free plan's limits."""
        name = name or f"Org {uuid.uuid4().hex[:6]}"
        response = self.post("/orgs/new", {"name": name})
        assert response.status_code == 302, response.get_data(as_text=True)
        org_id = org_id_of(self)
        if api_keys:
            set_plan_overrides(self.app, org_id, {"api_keys": {"value": True, "reason": "tests use keys"}})
        return org_id

    def api(self, method, url, token=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(url, method=method, headers=headers, **kwargs)


def set_plan_overrides(app, org_id: uuid.UUID, overrides: dict, plan: str | None = None) -> None:
    """Sets an organization's plan overrides (and plan, if given) as staff would, in core's database."""
    with app.app_context(), Session(db.engine) as session:
        scope_session(session, org_id=org_id)
        org = session.get(Organization, org_id)
        org.plan_overrides = overrides
        if plan is not None:
            org.plan = plan
        session.commit()


def unique_email() -> str:
    return f"person-{uuid.uuid4().hex[:10]}@example.com"


def org_id_of(browser: Browser) -> uuid.UUID:
    with browser.client.session_transaction() as session:
        return uuid.UUID(session["org_id"])


@pytest.fixture
def browser(core_app) -> Browser:
    return Browser(core_app)


@pytest.fixture
def new_browser(core_app):
    return lambda: Browser(core_app)


@pytest.fixture
def outbox(core_app):
    """Reads the email outbox as the admin role: the newest message to an address."""
    return lambda to, category=None: newest_email(core_app, to, category)


def newest_email(app, to: str, category: str | None = None) -> dict:
    """The newest message to `to` (of `category`, if given) in the outbox of the app's test database,
    read as the admin role (core may write the outbox, not read it)."""
    database = app.config.get("NECTAR_TEST_DATABASE")  # a test that runs its own server says so
    if database is None:
        server = ensure_embedded_server(test_server_dir(), durable=False)
        database = DatabaseUnderTest(server, app.config["NECTAR_SETTINGS"].database_url.database)
    with database.connect(Role.ADMIN) as conn:
        row = conn.execute(
            "SELECT subject, body_text, category FROM email_outbox WHERE to_address = %s "
            "AND (%s::text IS NULL OR category = %s) ORDER BY created_at DESC LIMIT 1",
            (to, category, category),
        ).fetchone()
    assert row is not None, f"no email to {to}"
    return {"subject": row[0], "body": row[1], "category": row[2]}


def link_in(body: str) -> str:
    """The path and query of the first link in an email body (the test client needs no host)."""
    match = re.search(r"https?://[^/\s]+(/\S+)", body)
    assert match, body
    return match.group(1)


def confirm_email(browser, outbox, email: str) -> None:
    """Confirms the signed-in user's address as a person would: asks for a new link, opens it."""
    assert browser.post("/verify-email/resend", {}).status_code == 302
    assert browser.get(link_in(outbox(email, "account.verify")["body"])).status_code == 302


def drain_jobs(app) -> None:
    """Runs core's worker until its queue is empty, as `core.pex worker --once` would."""
    from nectar.core.main import WORKER_BLUEPRINTS
    from nectar.core.runs import jobs
    from nectar.shared.jobs import job_app

    jobs.bind(app)
    worker = job_app(app.config["NECTAR_SETTINGS"].database_url, *WORKER_BLUEPRINTS)
    worker.run_worker(queues=[jobs.QUEUE], wait=False, install_signal_handlers=False)


def run_and_wait(browser, token, workflow_id, run_input=None) -> dict:
    """Starts a manual run through the API, lets the worker run it, and returns the finished run."""
    started = browser.api(
        "POST", f"/api/v1/workflows/{workflow_id}/runs", token=token, json={"input": run_input or {}}
    )
    assert started.status_code == 202, started.json
    assert started.json["status"] == "queued"
    drain_jobs(browser.app)
    return browser.api("GET", f"/api/v1/runs/{started.json['id']}", token=token).json
