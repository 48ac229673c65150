"""Telling a database outage from other database errors, and pools that recover from one by
themselves (the whole outage, end to end, is tests/integration/test_database_outage.py)."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import create_engine, exc, text

from nectar.shared.config import Role
from nectar.shared.database import engine_options, is_database_outage
from tests.serving import free_port


def _engine(url):
    options = engine_options("test")
    return create_engine(url, **options)


def _end_backend(pg_server, pid: int) -> None:
    """Ends one server process as a restart or a failover would, and waits until it is gone."""
    with pg_server.connect_as_superuser() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, f"backend {pid} still there"
            time.sleep(0.05)


def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout(pg_server, database):
    engine = _engine(database.url(Role.APP))
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        _end_backend(pg_server, first)
        # The pool holds the closed connection; the first request after the outage must not fail on it.
        with engine.connect() as conn:
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert second != first
        assert engine.pool.checkedin() == 1
    finally:
        engine.dispose()


def test_refused_and_lost_connections_are_outages(pg_server, database):
    closed = database.url(Role.APP).set(port=free_port())
    with pytest.raises(exc.OperationalError) as refused:
        _engine(closed).connect()
    assert is_database_outage(refused.value)

    with database.connect(Role.APP, autocommit=True) as conn:
        _end_backend(pg_server, conn.info.backend_pid)
        with pytest.raises(psycopg.OperationalError) as lost:
            conn.execute("SELECT 1")
    assert is_database_outage(lost.value)

    try:
        raise RuntimeError("wrapped") from lost.value
    except RuntimeError as wrapped:
        assert is_database_outage(wrapped), "an outage stays one when another error wraps it"


def test_other_database_errors_are_not_outages(database):
    with database.connect(Role.APP) as conn:
        with pytest.raises(psycopg.errors.SyntaxError) as bad_sql:
            conn.execute("SELEC 1")
        conn.rollback()
        conn.execute("SET statement_timeout = 10")
        with pytest.raises(psycopg.errors.QueryCanceled) as slow:  # an OperationalError too
            conn.execute("SELECT pg_sleep(1)")
    assert not is_database_outage(bad_sql.value)
    assert not is_database_outage(slow.value)
    assert not is_database_outage(ValueError("no database here"))
