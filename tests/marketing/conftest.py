"""Marketing test helpers: the app on the test database, a browser that submits its forms, the
marketing role's engine (what the worker uses), reads as admin, and a real SMTP server on loopback."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from nectar.marketing.app import create_app
from nectar.marketing.links import Links
from nectar.shared.config import Role, Service, load_smtp_settings
from tests.browser import Browser
from tests.marketing.mailserver import MailServer
from tests.serving import served


@pytest.fixture(scope="module")
def marketing_app(settings_for):
    app = create_app(settings_for(Service.MARKETING))
    yield app
    from nectar.shared.database import db

    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def browser(marketing_app) -> Browser:
    return Browser(marketing_app, token_page="/contact")


@pytest.fixture(autouse=True)
def fresh_rate_limits(database):
    """Every test starts with no form attempts counted (all tests share one client address)."""
    with database.connect(Role.OWNER, autocommit=True) as conn:
        conn.execute("DELETE FROM rate_limit_buckets WHERE key LIKE 'marketing.%'")


@pytest.fixture(scope="module")
def marketing_engine(database):
    """The marketing role's engine, as the worker has it."""
    engine = create_engine(database.url(Role.MARKETING))
    yield engine
    engine.dispose()


@pytest.fixture
def admin_db(database):
    """A connection as admin's role: how staff (and tests) see and change marketing's tables."""
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        yield conn


@pytest.fixture
def query(database):
    """Reads as the admin role, the way the admin service sees these tables."""

    def run(sql: str, *params):
        with database.connect(Role.ADMIN) as conn:
            return conn.execute(sql, params).fetchall()

    return run


@pytest.fixture
def links(marketing_app) -> Links:
    return Links(marketing_app.secret_key, marketing_app.config["NECTAR_SETTINGS"].public_url)


@pytest.fixture
def mail_server():
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp(mail_server):
    return load_smtp_settings(mail_server.environ())


@pytest.fixture
def empty_outbox(database):
    """Tests that count deliveries start from an empty outbox."""
    with database.connect(Role.OWNER, autocommit=True) as conn:
        conn.execute("UPDATE campaigns SET status = 'cancelled' WHERE status IN ('scheduled', 'sending')")
        conn.execute("DELETE FROM email_outbox")


@pytest.fixture(scope="module")
def live_marketing(settings_for):
    """The marketing app served over real HTTP (a threaded werkzeug server on loopback), behind one
    trusted proxy hop so each simulated visitor can bring its own address in X-Forwarded-For."""
    from nectar.shared.database import db

    app = create_app(settings_for(Service.MARKETING, TRUSTED_PROXY_HOPS="1"))
    with served(app) as url:
        yield url
    with app.app_context():
        db.engine.dispose()
