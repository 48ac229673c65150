"""Which endpoint answers a call, without asking the database on every call.

Each core process keeps the routes of the organizations it serves: their enabled endpoints with the
bound workflow versions, the organization's plan and staff's overrides of it, and the API-key hashes it has seen valid.
PostgreSQL tells every process of each change: a trigger on those tables sends NOTIFY nectar_routes
with the organization's id when the change commits (migration 0008), and the listening thread drops
that organization. Changes made through this process's ORM sessions drop it at commit too, so the
next call here sees them at once.

Notifications can be lost (the listening connection cut without a word, DATABASE_LISTEN_URL
unreachable), so nothing is kept longer than the settings' cache_max_age (CACHE_MAX_AGE_SECONDS,
30 s by default): a revoked key, a suspension or a plan change takes effect within that bound
whatever happens to notifications. LISTEN has a direct connection of its own (the listen URL):
behind PgBouncer in transaction mode the pooled one would hear nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from nectar.core.api_keys.service import key_hash
from nectar.core.endpoints.service import BoundEndpoint, Route, compile_path
from nectar.core.workflows.definition import may_wait, organization_references
from nectar.schema.models import ApiKey, Endpoint, Organization, Workflow, WorkflowVersion
from nectar.shared.config import Settings
from nectar.shared.database import (
    NO_PREPARED_STATEMENTS,
    SET_TENANT_SQL,
    all_per_database,
    in_one_round_trip,
    is_database_outage,
    libpq_dsn,
    one_per_database,
)

log = logging.getLogger(__name__)
CHANNEL = "nectar_routes"
MAX_ORGANIZATIONS = 2000  # organizations kept per process; the least recently called go first
MAX_KEYS = 1000  # valid API-key hashes kept per organization
LISTEN_WAIT_SECONDS = 2.0  # how long a first /readyz waits for the listener's first attempt
LISTEN_CONNECT_TIMEOUT = 5
LISTEN_CHECK_SECONDS = 10.0  # a silent listening connection is checked this often

# The organization's enabled endpoints with their workflow versions; no row when it is suspended
# (or not visible: another organization's id finds nothing under row-level security).
LOAD_SQL = """
    SELECT o.plan, o.plan_overrides, r.*
    FROM organizations o
    LEFT JOIN (
        SELECT e.id, e.method, e.path, e.auth, e.request_schema, e.workflow_id, v.id AS version_id, v.definition
        FROM endpoints e
        JOIN workflows w ON w.org_id = e.org_id AND w.id = e.workflow_id AND w.is_active
        JOIN workflow_versions v ON v.org_id = e.org_id AND v.workflow_id = e.workflow_id
                                 AND v.version = COALESCE(e.pinned_version, w.current_version)
        WHERE e.is_enabled
    ) r ON true
    WHERE o.status = 'active'
"""
# An unrevoked key's scopes and expiry (none: no such key, or revoked).
KEY_SQL = "SELECT scopes, expires_at FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL"


@dataclass
class OrgRoutes:
    plan: str
    plan_overrides: dict
    by_method: dict[str, list[BoundEndpoint]]
    read_at: float  # time.monotonic() when read: kept at most the table's max_age after
    # Keys seen valid, by hash: their scopes and expiry.
    valid_keys: dict[str, tuple[tuple[str, ...], datetime | None]] = field(default_factory=dict)

    def match(self, method: str, path: str) -> tuple[BoundEndpoint, dict] | None:
        """The endpoint whose path matches, an exact path before any with parameters."""
        candidates = self.by_method.get(method, ())
        exact = [e for e in candidates if e.path.rstrip("/") == path.rstrip("/")]
        for endpoint in exact or candidates:
            if exact or "{" in endpoint.path:
                found = compile_path(endpoint.path).match(path)
                if found:
                    return endpoint, found.groupdict()
        return None


class RouteTable:
    """The routes of one database's organizations, for the threads of one process: each kept at
    most `max_age` seconds, and dropped sooner when PostgreSQL notifies a change on `listen_url`."""

    def __init__(self, engine: Engine, listen_url: str, max_age: float):
        self.engine, self.max_age = engine, max_age
        listen = make_url(listen_url)
        self._listen_dsn = libpq_dsn(listen)
        self._listen_where = f"{listen.host or 'localhost'}:{listen.port or 5432}/{listen.database}"
        self._orgs: OrderedDict[uuid.UUID, OrgRoutes] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # moves on every drop, so a load that raced a change is not kept
        self._listening = False
        self._not_listening_because: str | None = None
        self._listener: threading.Thread | None = None
        self._tried = threading.Event()  # set once the listener's first attempt ended

    # --- lookups --------------------------------------------------------------------------------

    def find(self, org_id: uuid.UUID, method: str, path: str, bearer: str | None) -> Route | None:
        """The route for `method path` of the organization, None when there is none (or the
        organization is suspended), with the scopes of `bearer` when it is one of its usable API keys."""
        self._ensure_listener()
        routes = self._routes(org_id)
        if routes is None:
            return None
        found = routes.match(method, path)
        if found is None:
            return None
        endpoint, params = found
        key_scopes = self._key_scopes(org_id, routes, bearer) if endpoint.auth != "public" else None
        return Route(endpoint, routes.plan, key_scopes, params, routes.plan_overrides)

    def _routes(self, org_id: uuid.UUID) -> OrgRoutes | None:
        with self._lock:
            routes = self._orgs.get(org_id)
            if routes is not None and time.monotonic() - routes.read_at < self.max_age:
                self._orgs.move_to_end(org_id)
                return routes
            generation = self._generation
        read_at = time.monotonic()  # before the read: its age counts from what the database said
        rows = self._read(org_id, LOAD_SQL, ())
        if not rows:
            return None
        by_method: dict[str, list[BoundEndpoint]] = {}
        for row in rows:  # the organization's plan and overrides, then one endpoint (or none)
            endpoint_id, method, path, auth, schema, workflow_id, version_id, definition = row[2:]
            if endpoint_id is not None:
                by_method.setdefault(method, []).append(
                    BoundEndpoint(
                        endpoint_id,
                        path,
                        auth,
                        schema,
                        workflow_id,
                        version_id,
                        definition,
                        may_wait(definition),
                        bool(organization_references(definition)),
                    )
                )
        routes = OrgRoutes(rows[0][0], rows[0][1], by_method, read_at)
        with self._lock:
            if generation == self._generation:
                self._orgs[org_id] = routes
                while len(self._orgs) > MAX_ORGANIZATIONS:
                    self._orgs.popitem(last=False)
        return routes

    def _key_scopes(self, org_id: uuid.UUID, routes: OrgRoutes, bearer: str | None) -> tuple[str, ...] | None:
        """The scopes of `bearer`, if it is an unrevoked, unexpired key of the organization."""
        if bearer is None:
            return None
        digest = key_hash(bearer)
        known = routes.valid_keys.get(digest)
        if known is None:
            rows = self._read(org_id, KEY_SQL, (digest,))
            if not rows:
                return None
            known = (tuple(rows[0][0]), rows[0][1])
            if len(routes.valid_keys) < MAX_KEYS:
                routes.valid_keys[digest] = known  # kept as long as the routes: a revocation drops them all
        scopes, expires_at = known
        return scopes if expires_at is None or datetime.now(UTC) < expires_at else None

    def _read(self, org_id: uuid.UUID, query: str, params: tuple) -> list[tuple]:
        return in_one_round_trip(self.engine, [(SET_TENANT_SQL, (str(org_id),)), (query, params)])[1]

    # --- changes --------------------------------------------------------------------------------

    def drop(self, org_id: uuid.UUID | None = None) -> None:
        """Forgets one organization's routes, or every organization's."""
        with self._lock:
            self._generation += 1
            if org_id is None:
                self._orgs.clear()
            else:
                self._orgs.pop(org_id, None)

    def listener_state(self) -> dict[str, str]:
        """For /readyz: whether changes are heard at once ("listening"), or only found when kept
        routes expire ("degraded", with why)."""
        self._ensure_listener()
        self._tried.wait(LISTEN_WAIT_SECONDS)  # a process's first readiness check: its first attempt
        with self._lock:
            if self._listening:
                return {"route_changes": "listening"}
            because = self._not_listening_because or "still connecting"
        return {
            "route_changes": "degraded",
            "route_changes_detail": f"not listening at {self._listen_where} ({because}); routes, API keys "
            f"and suspensions are read again at least every {self.max_age:g} s",
        }

    def _ensure_listener(self) -> None:
        if self._listener is None or not self._listener.is_alive():
            with self._lock:
                if self._listener is None or not self._listener.is_alive():
                    self._listener = threading.Thread(target=self._listen, name="route-changes", daemon=True)
                    self._listener.start()

    def _listen(self) -> None:
        """Listens for changes until the process ends; reconnects with backoff when the connection
        is lost or cannot be made. Said once when listening stops, and once when it starts again."""
        backoff, said_stopped = 0.1, False
        while True:
            conn = None
            try:
                conn = psycopg.connect(
                    self._listen_dsn,
                    autocommit=True,
                    connect_timeout=LISTEN_CONNECT_TIMEOUT,
                    application_name="nectar-core-listener",
                    **NO_PREPARED_STATEMENTS,
                )
                conn.execute(f"LISTEN {CHANNEL}")
                self.drop()  # what was read before listening may have missed a change
                with self._lock:
                    self._listening, self._not_listening_because = True, None
                self._tried.set()
                if said_stopped:
                    log.info("route changes: listening again at %s", self._listen_where)
                backoff, said_stopped = 0.1, False
                while True:
                    for notice in conn.notifies(timeout=LISTEN_CHECK_SECONDS):
                        try:
                            self.drop(uuid.UUID(notice.payload))
                        except ValueError:
                            self.drop()
                    conn.execute("SELECT 1")  # a connection lost without a word is noticed
            except Exception as error:  # noqa: BLE001 - this thread must outlive anything but the process
                reason = _one_line(error)
                if not isinstance(error, psycopg.Error | OSError) and not is_database_outage(error):
                    log.exception("route changes: listening stopped")
                elif not said_stopped:  # once, not at every attempt during an outage
                    log.warning(
                        "route changes: not listening at %s (%s); serving on, with routes, API keys and "
                        "suspensions read again at least every %g s (CACHE_MAX_AGE_SECONDS)",
                        self._listen_where,
                        reason,
                        self.max_age,
                    )
                said_stopped = True
                with self._lock:
                    was_listening = self._listening
                    self._listening, self._not_listening_because = False, reason
                if was_listening:
                    self.drop()  # a change may have gone unheard
            self._tried.set()
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001, S110 - it is broken already
                    pass
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def _one_line(error: BaseException) -> str:
    message = str(error).strip()
    return message.splitlines()[-1] if message else type(error).__name__


def route_table(engine: Engine, settings: Settings) -> RouteTable:
    """The route table of `engine`'s database in this process, as `settings` configure it."""
    return one_per_database(engine, RouteTable, settings.listen_url_text, settings.cache_max_age)


# --- changes made in this process ----------------------------------------------------------------

_ROUTE_MODELS = (Organization, Endpoint, Workflow, WorkflowVersion, ApiKey)
_CHANGED = "nectar_route_changes"


@event.listens_for(Session, "after_flush")
def _note_route_changes(session: Session, _context) -> None:
    for instance in (*session.new, *session.dirty, *session.deleted):
        if isinstance(instance, _ROUTE_MODELS):
            org_id = instance.id if isinstance(instance, Organization) else instance.org_id
            session.info.setdefault(_CHANGED, set()).add(org_id)


@event.listens_for(Session, "after_commit")
def _drop_changed_routes(session: Session) -> None:
    for org_id in session.info.pop(_CHANGED, ()):
        for table in all_per_database(RouteTable):
            table.drop(org_id)


@event.listens_for(Session, "after_rollback")
def _forget_changes(session: Session) -> None:
    session.info.pop(_CHANGED, None)
