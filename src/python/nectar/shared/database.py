"""The database handle every service shares, and the one way to act as an organization.

Row-level security compares each tenant row's `org_id` with the transaction-local setting
`nectar.org_id`. `tenant_scope` sets it at the start of every transaction of a session, with
`set_config(..., true)`, so it dies with the transaction and a pooled connection never carries a
tenant into the next request. No scope means no rows: the policies match nothing.
"""

from __future__ import annotations

import functools
import os
import select
import threading
import uuid
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, exc, inspect, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session
from sqlalchemy.pool import Pool

from nectar.shared.bad_input import check_text
from nectar.shared.config import ConfigError
from nectar.shared.rejection import InputRejected

TENANT_SETTING = "nectar.org_id"
USER_SETTING = "nectar.user_id"
SCOPE_KEY = "nectar_scope"
SET_TENANT_SQL = "SELECT set_config('nectar.org_id', %s, true)"

# Stable constraint names, so Alembic migrations can name what they create and drop.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Objects stay readable after commit: reloading them could happen under a different scope (an
# organization just created, say, is not visible to the scope the request started with).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})


@contextmanager
def tenant_scope(session: Session, org_id: uuid.UUID | str) -> Iterator[Session]:
    """Runs the block as organization `org_id`: every transaction the session begins is scoped to it.

    Leaving the block restores the previous scope, in the open transaction too, so code after it
    cannot keep acting as `org_id`.
    """
    with _scoped(session, TENANT_SETTING, org_id):
        yield session


@contextmanager
def user_scope(session: Session, user_id: uuid.UUID | str) -> Iterator[Session]:
    """Runs the block as user `user_id`: the user's own memberships and organizations become
    readable (policies `member_self`, `member_of`), nothing else of any organization."""
    with _scoped(session, USER_SETTING, user_id):
        yield session


def scope_session(
    session: Session, *, org_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
) -> None:
    """Sets the scope for the rest of a session's life (a web request's session, which is discarded
    at the end of the request), in the open transaction too. None clears that part of the scope."""
    session = _plain(session)
    scope = {TENANT_SETTING: str(org_id) if org_id else "", USER_SETTING: str(user_id) if user_id else ""}
    session.info[SCOPE_KEY] = {name: value for name, value in scope.items() if value}
    if session.in_transaction():
        _apply_scope(session.connection(), scope)


def current_org_id(session: Session) -> uuid.UUID | None:
    org = session.info.get(SCOPE_KEY, {}).get(TENANT_SETTING)
    return uuid.UUID(org) if org else None


@contextmanager
def _scoped(session: Session, setting: str, value: uuid.UUID | str) -> Iterator[None]:
    session = _plain(session)
    scope: dict[str, str] = session.info.setdefault(SCOPE_KEY, {})
    previous = scope.get(setting)
    scope[setting] = str(uuid.UUID(str(value)))
    try:
        if session.in_transaction():
            _apply_scope(session.connection(), scope)
        yield
    finally:
        # Also when the block raised: a caller that catches the error and goes on in the same
        # transaction must not stay scoped. A failed transaction is rolled back anyway.
        _restore(scope, setting, previous)
        if session.in_transaction():
            connection = session.connection()
            status = connection.connection.dbapi_connection.info.transaction_status
            if status != psycopg.pq.TransactionStatus.INERROR:
                _apply_scope(connection, {setting: previous or ""})


def _plain(session: Session | scoped_session) -> Session:
    """Flask-SQLAlchemy's `db.session` is a scoped_session proxy; the scope lives on the real one."""
    return session() if isinstance(session, scoped_session) else session


def _restore(scope: dict[str, str], setting: str, previous: str | None) -> None:
    if previous is None:
        scope.pop(setting, None)
    else:
        scope[setting] = previous


@event.listens_for(Session, "after_begin")
def _scope_new_transaction(session: Session, _transaction, connection: Connection) -> None:
    scope = session.info.get(SCOPE_KEY)
    if scope:
        _apply_scope(connection, scope)


# The range of each integer column type, by the SQLAlchemy type's class name.
_INTEGER_RANGES = {"SmallInteger": 2**15, "Integer": 2**31, "BigInteger": 2**63}


@event.listens_for(Session, "before_flush")
def _check_row_values(session: Session, _context, _instances) -> None:
    """Every value an ORM flush is about to write, checked against its column first: text that fits
    the column's String(n) and can be stored (no NUL), whole numbers inside the column's range. What
    does not fit is a InputRejected (422) naming the column, never a DataError from the database."""
    for row in (*session.new, *session.dirty):
        state = inspect(row)
        for attribute in state.mapper.column_attrs:
            value = state.dict.get(attribute.key)
            if value is not None:
                _check_column_value(attribute.key, attribute.columns[0].type, value)


def _check_column_value(name: str, column_type, value) -> None:
    if isinstance(value, str):
        check_text(value, field=name)
        length = getattr(column_type, "length", None)
        if length is not None and len(value) > length:
            raise InputRejected(f"{name} is at most {length:,} characters.", status=422, field=name)
    elif isinstance(value, int) and not isinstance(value, bool):
        bound = _integer_bound(type(column_type))
        if bound is not None and not -bound <= value < bound:
            raise InputRejected(f"{name} is out of range.", status=422, field=name)


@functools.cache  # every flush asks, for a handful of column types
def _integer_bound(kind: type) -> int | None:
    return next((_INTEGER_RANGES[k.__name__] for k in kind.__mro__ if k.__name__ in _INTEGER_RANGES), None)


def _apply_scope(connection: Connection, scope: dict[str, str]) -> None:
    """Sets every scope setting in one statement (one round trip), transaction-local."""
    names = sorted(scope)
    columns = ", ".join(f"set_config(:name{i}, :value{i}, true)" for i in range(len(names)))
    params = {}
    for i, name in enumerate(names):
        params[f"name{i}"], params[f"value{i}"] = name, scope[name]
    connection.execute(text(f"SELECT {columns}"), params)  # noqa: S608 - placeholders only


@contextmanager
def tenant_transaction(conn: psycopg.Connection, org_id: uuid.UUID | str) -> Iterator[psycopg.Connection]:
    """The same scope for a raw psycopg connection: one transaction as organization `org_id`."""
    org = str(uuid.UUID(str(org_id)))
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        # Nested, it would be a savepoint, and the setting would outlive it in the outer transaction.
        raise RuntimeError("tenant_transaction needs a connection outside any transaction")
    with conn.transaction():
        conn.execute(SET_TENANT_SQL, (org,))
        yield conn


def in_one_round_trip(engine: Engine, statements: list[tuple[str, Any]]) -> list[list[tuple] | None]:
    """Runs `statements` ((query, params) in psycopg's style) as one transaction sent in one message
    (the simple query protocol, parameters bound and escaped by psycopg on the client), for hot
    paths where each round trip counts. Returns each statement's rows (None for those without).
    psycopg's pipeline mode would also send them together, but it waits by polling, which costs
    more CPU than it saves."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        bind = psycopg.ClientCursor(conn).mogrify
        script = ";\n".join(["BEGIN", *(bind(query, params) for query, params in statements), "COMMIT"])
        conn.autocommit = True  # the script says BEGIN itself; psycopg would send one more
        results: list[list[tuple] | None] = []
        try:
            with conn.cursor() as cursor:
                cursor.execute(script)  # no parameters: sent as one simple Query
                while True:
                    results.append(cursor.fetchall() if cursor.description is not None else None)
                    if not cursor.nextset():
                        break
        finally:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            conn.autocommit = False  # back to the pool as it came out
        return results[1:-1]
    except psycopg.OperationalError:
        raw.invalidate()
        raise
    finally:
        raw.close()


T = TypeVar("T")
_per_database: dict[tuple[Callable, int, str], Any] = {}
_per_engine: weakref.WeakKeyDictionary[Engine, dict] = weakref.WeakKeyDictionary()
_per_database_lock = threading.Lock()


def one_per_database(engine: Engine, kind: Callable[..., T], *settings: Hashable) -> T:
    """The single `kind(engine, *settings)` for `engine`'s database in this process, made on first
    use: for helpers that hold threads and connections of their own. Tests make many apps (engines)
    on one database and share one (one per distinct `settings`); a forked worker makes its own."""
    pid = os.getpid()
    known = _per_engine.get(engine, {}).get((kind, settings))
    if known is not None and known[0] == pid:
        return known[1]
    with _per_database_lock:
        key = (kind, pid, engine.url.render_as_string(hide_password=False), settings)
        if key not in _per_database:
            _per_database[key] = kind(engine, *settings)
        _per_engine.setdefault(engine, {})[(kind, settings)] = (pid, _per_database[key])
        return _per_database[key]


def all_per_database(kind: Callable[[Engine], T]) -> list[T]:
    """Every `kind` this process has made with one_per_database."""
    pid = os.getpid()
    return [
        made
        for (made_kind, made_pid, _, _), made in list(_per_database.items())
        if (made_kind, made_pid) == (kind, pid)
    ]


def engine_options(service: str) -> dict:
    """Pool settings every service uses: small pools, slow peers bounded. No pre-ping: it costs a
    round trip per checkout; a connection the server closed is replaced at checkout instead (see
    _replace_connections_the_server_closed), and connections are recycled well before server-side
    idle timeouts."""
    return {
        "pool_pre_ping": False,
        "pool_size": 5,
        "max_overflow": 5,
        "pool_recycle": 300,
        # No startup option (`options=-c ...`): PgBouncer refuses those. Times come back in UTC
        # whatever the server's zone through the database's own setting (migration 0024).
        "connect_args": {"connect_timeout": 5, "application_name": f"nectar-{service}"},
    }


@event.listens_for(Pool, "connect")
def _no_server_side_prepared_statements(dbapi_connection, _record) -> None:
    """Every engine's connections (the services', workers', commands'): psycopg prepares a statement
    on the server after its fifth run, and behind PgBouncer in transaction mode the next run may
    land on a server connection that never saw it. Always off rather than a setting: the hot paths
    send their statements as one simple query (in_one_round_trip), which is never prepared, and a
    forgotten setting would fail only under load, after the fifth run."""
    if isinstance(dbapi_connection, psycopg.Connection):
        dbapi_connection.prepare_threshold = None


# For connections made without an engine (procrastinate's pool, probes): the same promise.
NO_PREPARED_STATEMENTS = {"prepare_threshold": None}


@event.listens_for(Pool, "checkout")
def _replace_connections_the_server_closed(dbapi_connection, _record, _proxy) -> None:
    """A pooled connection waits with nothing to read. If its socket is readable, the server closed
    it (a restart, a failover, an outage now over) or spoke unasked: DisconnectionError makes the
    pool connect afresh, so the first request after an outage does not fail on a connection from
    before it. One poll() system call, where pool_pre_ping would cost a round trip per checkout."""
    if not isinstance(dbapi_connection, psycopg.Connection):
        return
    if dbapi_connection.closed:
        raise exc.DisconnectionError("the connection is closed")
    readable = select.poll()
    readable.register(dbapi_connection.pgconn.socket, select.POLLIN)
    if readable.poll(0):
        raise exc.DisconnectionError("the server closed the connection")


# What PostgreSQL answers while it cannot serve: shutting down, crashed, starting, no free connection.
OUTAGE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


def is_database_outage(error: BaseException) -> bool:
    """Whether `error`, or an error that caused it, says the database cannot be reached right now: a
    refused or lost connection (libpq's own errors, class 08), a server shutting down or starting, a
    pool with no connection to give. These pass with the outage, so callers answer 503 or retry
    later; any other error is a bug or bad input, and is not one of them."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, exc.TimeoutError):  # SQLAlchemy's pool
            return True
        if isinstance(current, psycopg.OperationalError | psycopg.InterfaceError):
            state = current.sqlstate
            if state is None or state.startswith("08") or state in OUTAGE_SQLSTATES:
                return True
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return False


def check_connection(url: URL, timeout: int = 5) -> None:
    """Connects once; raises ConfigError with a one-line reason when the database cannot be reached."""
    try:
        with psycopg.connect(libpq_dsn(url), connect_timeout=timeout, **NO_PREPARED_STATEMENTS) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
        raise ConfigError(f"cannot reach the database at {where} as {url.username}: {reason}") from None


def libpq_dsn(url: URL) -> str:
    """`url` as libpq (and psycopg without SQLAlchemy) takes it, password included."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class RoundTrips:
    """Counts network round trips to PostgreSQL on every connection this process checks out of a
    pool meanwhile (request threads and background writers alike), from libpq's protocol trace:
    the client waits for the server once per Sync (extended protocol, pipelines included) and once
    per simple Query. For tests and benchmarks."""

    def __init__(self):
        self.count = 0
        self._files: list = []

    def __enter__(self) -> RoundTrips:
        event.listen(Pool, "checkout", self._trace)
        return self

    def _trace(self, dbapi_connection, _record, _proxy) -> None:
        import tempfile

        handle = tempfile.TemporaryFile("w+")
        dbapi_connection.pgconn.trace(handle.fileno())
        dbapi_connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        self._files.append((dbapi_connection, handle))

    def __exit__(self, *exc) -> None:
        event.remove(Pool, "checkout", self._trace)
        for connection, handle in self._files:
            connection.pgconn.untrace()
            handle.seek(0)
            for line in handle:
                fields = line.split("\t")
                if len(fields) >= 3 and fields[0].strip() == "F" and fields[2].strip() in ("Sync", "Query"):
                    self.count += 1
            handle.close()
