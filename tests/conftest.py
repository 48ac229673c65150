"""Fixtures every test shares: one embedded PostgreSQL server, and a fresh database per test process.

Pants runs test files in parallel processes. They share one server (started once, under a file
lock, with fsync off) and each creates its own database, migrated to head as nectar_owner, so
parallel processes never see each other's rows. The server stops by itself once no test process
has used it for TEST_SERVER_IDLE_SECONDS; `./pants run :dev -- embedded-db stop` stops it at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from nectar.schema.migrate import upgrade
from nectar.shared.config import DATABASE_NAME, Role, Service, Settings, load_settings, var_dir
from nectar.shared.embedded_postgres import EmbeddedServer, ensure_embedded_server
from tests.pgbouncer import Pooler, pgbouncer


@dataclass(frozen=True)
class DatabaseUnderTest:
    """A test's database; `pooler`, if given, is the PgBouncer every service role's connection
    goes through (migrations and LISTEN connect directly, as in production)."""

    server: EmbeddedServer
    name: str
    pooler: Pooler | None = None

    def url(self, role: Role | str) -> URL:
        direct = self.direct_url(role)
        return direct if self.pooler is None or role == Role.OWNER else self.pooler.through(direct)

    def direct_url(self, role: Role | str) -> URL:
        return self.server.url(role, self.name)

    def through(self, pooler: Pooler) -> DatabaseUnderTest:
        """The same database, reached through `pooler`."""
        return replace(self, pooler=pooler)

    def connect(self, role: Role | str, **kwargs) -> psycopg.Connection:
        url = self.url(role)
        return psycopg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname=url.database,
            **kwargs,
        )

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment a service process would get to use this database."""
        env = {role.url_variable: self.url(role).render_as_string(hide_password=False) for role in Role}
        if self.pooler is not None:
            env.update(
                {
                    role.listen_url_variable: self.direct_url(role).render_as_string(hide_password=False)
                    for role in Role
                    if role != Role.OWNER
                }
            )
        env.update(NECTAR_ENV="test", SECRET_KEY="test-secret-key-that-is-long-enough-to-pass")
        env.update(extra)
        return env

    def job_history(self, job_id: int) -> tuple[str, int, list[str]]:
        """A procrastinate job's status, attempts and events (in order)."""
        with self.connect(Role.ADMIN) as conn:
            status, attempts = conn.execute(
                "SELECT status, attempts FROM procrastinate_jobs WHERE id = %s", (job_id,)
            ).fetchone()
            events = conn.execute(
                "SELECT type::text FROM procrastinate_events WHERE job_id = %s ORDER BY id", (job_id,)
            ).fetchall()
        return status, attempts, [event for (event,) in events]


# The shared test server outlives each test process (the next one reuses it) and stops this long
# after the last one ended.
TEST_SERVER_IDLE_SECONDS = 300


def test_server_dir() -> Path:
    """var/test-postgres: beside the services' var/postgres, so `embedded-db stop` finds it too."""
    configured = os.environ.get("NECTAR_TEST_POSTGRES_DIR")
    return Path(configured) if configured else var_dir(os.environ) / "test-postgres"


def own_server_root(name: str) -> Path:
    """A new directory for a server of a test's own, beside the shared test server. Not under
    pytest's temporary root: each pytest process that starts makes that folder 0700 again, and the
    server's account (not root) could then no longer reach its data directory."""
    parent = test_server_dir().parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"test-{name}-", dir=parent))


@contextmanager
def own_server(name: str) -> Iterator[DatabaseUnderTest]:
    """A durable PostgreSQL server of a test's own (one it may stop and start), migrated, removed after."""
    root = own_server_root(name)
    server = ensure_embedded_server(root)
    try:
        database = DatabaseUnderTest(server, DATABASE_NAME)
        upgrade(database.url(Role.OWNER))
        yield database
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> EmbeddedServer:
    return ensure_embedded_server(test_server_dir(), durable=False, stop_when_idle=TEST_SERVER_IDLE_SECONDS)


@pytest.fixture(scope="session")
def database(pg_server: EmbeddedServer) -> Iterator[DatabaseUnderTest]:
    name = f"nectar_test_{os.environ.get('NECTAR_TEST_SLOT', '0')}_{os.getpid()}"
    pg_server.drop_database(name)
    pg_server.create_database(name)
    test_database = DatabaseUnderTest(pg_server, name)
    upgrade(test_database.url(Role.OWNER))
    yield test_database
    pg_server.drop_database(name)


@pytest.fixture(scope="session")
def pooler(pg_server: EmbeddedServer) -> Iterator[Pooler]:
    """A PgBouncer in transaction mode in front of the test server, for this test process
    (`database.through(pooler)` reaches the test database through it)."""
    root = own_server_root("pgbouncer")
    try:
        with pgbouncer(pg_server, root) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings_for(database: DatabaseUnderTest):
    def settings(service: Service, **extra: str) -> Settings:
        return load_settings(service, database.environ(**extra))

    return settings
