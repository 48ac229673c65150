"""Core and its worker through a real PgBouncer in transaction mode (tests/pgbouncer.py), as
production runs them: a revoked API key and a suspended organization stop working, heard through
LISTEN on a direct connection of its own, or, with notifications lost, within the cache bound
(CACHE_MAX_AGE_SECONDS); no statement is prepared on a server connection another client may get
next; the worker runs jobs through the pooler and hears new ones on its listen URL."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import create_engine, text

from nectar.core.app import create_app
from nectar.shared.config import Role, Service, load_settings
from nectar.shared.database import db, libpq_dsn
from nectar.shared.jobs import JobConnector
from tests.core.conftest import SERVICE_TOKEN, Browser, run_and_wait
from tests.core.test_api import _new_key
from tests.core.test_endpoints import _endpoint, _workflow
from tests.serving import free_port

SHORT_BOUND = 1  # seconds: CACHE_MAX_AGE_SECONDS of the core that hears no notification
JOBS_CHANNEL = "nectar_test_new_jobs"


@pytest.fixture(scope="module")
def pooled(database, pooler):
    return database.through(pooler)


def _core(pooled, **extra):
    app = create_app(load_settings(Service.CORE, pooled.environ(CORE_SERVICE_TOKEN=SERVICE_TOKEN, **extra)))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def pooled_core(pooled):
    yield from _core(pooled)


@pytest.fixture(scope="module")
def deaf_core(pooled):
    """Core whose listen URL cannot be reached (nothing listens on its port): it hears no change."""
    unreachable = pooled.direct_url(Role.APP).set(port=free_port())
    yield from _core(
        pooled,
        DATABASE_LISTEN_URL=unreachable.render_as_string(hide_password=False),
        CACHE_MAX_AGE_SECONDS=str(SHORT_BOUND),
    )


def _endpoint_with_key(app):
    browser = Browser(app)
    browser.sign_up()
    org = browser.create_org()
    token = _new_key(browser)
    endpoint = _endpoint(browser, token, _workflow(browser, token), auth="api_key")
    return browser, org, token, endpoint["url"].replace("{id}", "7")


def _call(browser, url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return browser.client.post(url, json={"items": [{"price": 150}]}, headers=headers).status_code


def _changed_elsewhere(pooled, statement: str, org) -> None:
    """`statement` by another client of the pooler, as admin would make it."""
    with pooled.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(statement, (org,))


def _until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds:g} s"
        time.sleep(0.05)


def test_a_revoked_key_and_a_suspended_organization_stop_working_through_pgbouncer(pooled_core, pooled):
    ready = pooled_core.test_client().get("/readyz")
    assert ready.status_code == 200 and ready.json["route_changes"] == "listening", ready.json
    browser, org, token, url = _endpoint_with_key(pooled_core)
    assert _call(browser, url, token) == 200 and _call(browser, url, token) == 200  # the second one kept
    assert browser.api("GET", "/api/v1/workflows", token=token).status_code == 200

    # Heard through LISTEN, well before the 30 s the kept routes would live without it.
    _changed_elsewhere(pooled, "UPDATE api_keys SET revoked_at = now() WHERE org_id = %s", org)
    _until(lambda: _call(browser, url, token) == 401, 10, "the revocation")
    assert browser.api("GET", "/api/v1/workflows", token=token).status_code == 401

    _changed_elsewhere(pooled, "UPDATE endpoints SET auth = 'public' WHERE org_id = %s", org)
    _until(lambda: _call(browser, url) == 200, 10, "the endpoint going public")
    _changed_elsewhere(pooled, "UPDATE organizations SET status = 'suspended' WHERE id = %s", org)
    _until(lambda: _call(browser, url) == 404, 10, "the suspension")


def test_with_notifications_lost_a_revoked_key_stops_working_within_the_bound(deaf_core, pooled, caplog):
    caplog.set_level(logging.INFO, logger="nectar.core.endpoints.routing")
    ready = deaf_core.test_client().get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready"
    assert ready.json["route_changes"] == "degraded"
    assert f"every {SHORT_BOUND} s" in ready.json["route_changes_detail"]
    browser, org, token, url = _endpoint_with_key(deaf_core)
    assert _call(browser, url, token) == 200

    _changed_elsewhere(pooled, "UPDATE api_keys SET revoked_at = now() WHERE org_id = %s", org)
    # Only the bound can end it: nothing tells this process. A few seconds of margin for a busy machine.
    _until(lambda: _call(browser, url, token) == 401, SHORT_BOUND + 5, "the revocation")
    _changed_elsewhere(pooled, "UPDATE organizations SET status = 'suspended' WHERE id = %s", org)
    _until(lambda: _call(browser, url, token) == 404, SHORT_BOUND + 5, "the suspension")

    said = [r for r in caplog.records if r.name == "nectar.core.endpoints.routing"]
    assert len(said) == 1, [r.getMessage() for r in said]  # once, not at every attempt since
    assert said[0].levelno == logging.WARNING
    assert "route changes: not listening at 127.0.0.1:" in said[0].getMessage()


def test_statements_are_never_prepared_on_a_server_connection_the_next_run_may_miss(pooled):
    """psycopg prepares a statement after its fifth run; through PgBouncer in transaction mode the
    sixth may run on another server connection, where it does not exist. Every other transaction
    here, a second client holds the server connection the engine's client would get, so the
    engine's transactions alternate between two server connections."""
    engine = create_engine(pooled.url(Role.APP), pool_size=1, max_overflow=0)
    backends = set()
    try:
        with pooled.connect(Role.APP, prepare_threshold=None) as other, engine.connect() as conn:
            for run in range(12):
                if run % 2 == 0:
                    other.execute("SELECT 1")  # opens a transaction, holding a server connection
                backend, echoed = conn.execute(
                    text("SELECT pg_backend_pid(), CAST(:n AS int)"), {"n": run}
                ).one()
                conn.commit()
                other.commit()
                backends.add(backend)
                assert echoed == run
    finally:
        engine.dispose()
    assert len(backends) >= 2, "the pooler gave one server connection throughout: the test proves nothing"


def test_the_worker_runs_jobs_through_pgbouncer(pooled_core):
    browser = Browser(pooled_core)
    browser.sign_up()
    browser.create_org()
    token = _new_key(browser)
    run = run_and_wait(browser, token, _workflow(browser, token), {"body": {"items": [{"price": 5}]}})
    assert run["status"] == "succeeded", run


async def _heard(connector: JobConnector, notify, seconds: float) -> list[str]:
    heard: list[str] = []

    async def on_notification(*, channel: str, payload: str) -> None:
        heard.append(payload)

    listening = asyncio.ensure_future(connector.listen_notify(on_notification, [JOBS_CHANNEL]))
    deadline = time.monotonic() + seconds
    while not heard and time.monotonic() < deadline and not listening.done():
        await asyncio.sleep(0.1)
        await asyncio.to_thread(notify)
    listening.cancel()
    try:
        await listening
    except asyncio.CancelledError:
        pass
    return heard


def test_a_worker_hears_new_jobs_on_its_listen_url_and_polls_when_it_cannot(pooled, caplog):
    def notify():
        with pooled.connect(Role.APP, autocommit=True) as conn:  # through the pooler, as jobs are queued
            conn.execute("SELECT pg_notify(%s, 'job')", (JOBS_CHANNEL,))

    pooled_dsn, direct_dsn = libpq_dsn(pooled.url(Role.APP)), libpq_dsn(pooled.direct_url(Role.APP))
    assert asyncio.run(_heard(JobConnector(pooled_dsn, direct_dsn), notify, 10)), "nothing heard"

    caplog.set_level(logging.INFO, logger="nectar.shared.jobs")
    unreachable = libpq_dsn(pooled.direct_url(Role.APP).set(port=free_port()))
    assert asyncio.run(_heard(JobConnector(pooled_dsn, unreachable), notify, 1)) == []
    said = [r.getMessage() for r in caplog.records if r.name == "nectar.shared.jobs"]
    assert len(said) == 1 and "cannot listen for new jobs" in said[0], said


def test_times_come_back_in_utc_with_no_startup_option(pooled):
    """UTC is the database's own setting (migration 0024): PgBouncer refuses `options=-c TimeZone=UTC`."""
    for role in (Role.APP, Role.MARKETING, Role.ADMIN):
        with pooled.connect(role) as conn:
            assert conn.execute("SHOW TimeZone").fetchone()[0] == "UTC"
            assert conn.execute("SELECT now()").fetchone()[0].utcoffset().total_seconds() == 0
