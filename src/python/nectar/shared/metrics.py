"""Prometheus metrics of every process (issue 19), and the scrape endpoint that serves them.

Web processes run under gunicorn with several workers: prometheus-client's multiprocess mode, each
worker writing its values to files in one directory that every scrape adds up
(`use_multiprocess_dir`, called by `serve` before gunicorn forks). Background workers are one
process each and serve their own /metrics on WORKER_METRICS_PORT (`serve_worker_metrics`): they may
run on other machines than the web processes, so a shared directory cannot be assumed.

Gauges read from the database (job queues, the mail outbox, Stripe events) are read when scraped,
by `DatabaseGauges`, on a connection of its own with short time-outs: a scrape while the database is
down answers at once, with `nectar_metrics_database_up 0` and those gauges absent.
"""

from __future__ import annotations

import atexit
import hmac
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

from nectar.shared.config import Observability, share_metrics_dir
from nectar.shared.database import NO_PREPARED_STATEMENTS, libpq_dsn

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"

# Every metric has labels, so no value exists before the first use: values made after
# use_multiprocess_dir go to the shared files (prometheus-client picks its value kind then).
HTTP_REQUEST_SECONDS = Histogram(
    "nectar_http_request_duration_seconds",
    "Requests answered, by route template (never the raw path), method and status, and how long they took.",
    ["route", "method", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DB_POOL_CONNECTIONS = Gauge(
    "nectar_db_pool_connections",
    "The web process's database pool: connections in use, and open but idle (summed over live workers).",
    ["state"],
    multiprocess_mode="livesum",
)

# Methods outside this list are counted as OTHER: a client must not be able to add label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def use_multiprocess_dir(observability: Observability, service: str) -> Path:
    """Prepares gunicorn's workers' shared metrics directory before they fork: <service>/ under
    PROMETHEUS_MULTIPROC_DIR if set (so services given the same one never mix or wipe each
    other's), emptied of a previous run's files, whose counters would otherwise carry on; else a
    new temporary directory, removed when this process ends. Returns it."""
    made_here = observability.metrics_dir is None
    if made_here:
        path = Path(tempfile.mkdtemp(prefix=f"nectar-{service}-metrics-"))
    else:
        path = observability.metrics_dir / service
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    share_metrics_dir(path)
    values.ValueClass = values.get_value_class()
    if made_here:
        owner = os.getpid()  # forked workers run atexit too; only this process removes it
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, ignore_errors=True))
    return path


def use_single_process_values() -> None:
    """A worker process counts in memory, whatever PROMETHEUS_MULTIPROC_DIR its environment holds:
    its own /metrics serves them, and files beside a web service's would be counted there too."""
    values.ValueClass = values.MutexValue


def mark_worker_dead(pid: int) -> None:
    """gunicorn's child_exit: a dead worker's live gauges (its pool) stop counting."""
    multiprocess.mark_process_dead(pid)


def watch_pool(engine: Engine) -> None:
    """Keeps `nectar_db_pool_connections` up to date from the engine's pool: set from the pool's
    own counts (never added to, so it cannot drift) at each checkout and checkin. A checkin is
    announced before the connection is back in the pool, so it counts as returned already."""
    pool = engine.pool
    if not hasattr(pool, "checkedout"):
        return  # a pool without counts (NullPool, StaticPool)
    in_use, idle = DB_POOL_CONNECTIONS.labels("in_use"), DB_POOL_CONNECTIONS.labels("idle")

    def checked_out(*_args) -> None:
        in_use.set(pool.checkedout())
        idle.set(pool.checkedin())

    def checked_in(*_args) -> None:
        in_use.set(pool.checkedout() - 1)
        idle.set(pool.checkedin() + 1)

    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)


CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 1000
# Waiting jobs are todo and due; the oldest waits since it became due: its scheduled time, or when
# it was queued (procrastinate's 'deferred' event, found by the job's id through its index).
_QUEUE_SQL = """
    SELECT q.queue_name, count(j.id),
           extract(epoch FROM now() - least(
               min(j.scheduled_at),
               (SELECT min(e.at) FROM procrastinate_events e
                 WHERE e.job_id = min(j.id) FILTER (WHERE j.scheduled_at IS NULL) AND e.type = 'deferred')))
      FROM unnest(%s::text[]) AS q(queue_name)
      LEFT JOIN procrastinate_jobs j
        ON j.queue_name = q.queue_name AND j.status = 'todo'
       AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
     GROUP BY q.queue_name
"""
_OUTBOX_SQL = """
    SELECT count(*), extract(epoch FROM now() - min(created_at))
      FROM email_outbox WHERE status IN ('pending', 'sending')
"""
_STRIPE_SQL = """
    SELECT count(*), extract(epoch FROM now() - min(received_at)) FROM stripe_events WHERE processed_at IS NULL
"""


class DatabaseGauges:
    """A collector of what waits in the database, read at scrape time with cheap, indexed queries:
    jobs of `queues`, and, where the role may read them, the mail outbox and unprocessed Stripe events."""

    def __init__(
        self, url: URL, queues: tuple[str, ...], *, mail_outbox: bool = False, stripe_events: bool = False
    ):
        self.conninfo = libpq_dsn(url)
        self.queues, self.mail_outbox, self.stripe_events = list(queues), mail_outbox, stripe_events

    def describe(self):
        return []  # read only when scraped: never while a registry is being put together

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "nectar_metrics_database_up",
            "1 when this scrape read the database gauges; 0 when the database did not answer (they are absent then).",
        )
        try:
            families = self._read()
        except psycopg.Error as error:
            log.warning("metrics: the database gauges could not be read: %s", type(error).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "nectar_job_queue_depth", "Jobs due and waiting for a worker.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "nectar_job_queue_oldest_age_seconds",
            "How long the longest-waiting due job has waited.",
            labels=["queue"],
        )
        families = [depth, age]
        with psycopg.connect(
            self.conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS, **NO_PREPARED_STATEMENTS
        ) as connection:
            # SET LOCAL, not a startup option: PgBouncer in transaction mode refuses those.
            connection.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            for queue, waiting, oldest in connection.execute(_QUEUE_SQL, (self.queues,)):
                depth.add_metric([queue], waiting)
                age.add_metric([queue], float(oldest or 0))
            if self.mail_outbox:
                waiting, oldest = connection.execute(_OUTBOX_SQL).fetchone()
                families += _pair("nectar_mail_outbox", "Emails waiting in the outbox", waiting, oldest)
            if self.stripe_events:
                waiting, oldest = connection.execute(_STRIPE_SQL).fetchone()
                families += _pair(
                    "nectar_stripe_events", "Stripe events received, not yet processed", waiting, oldest
                )
            connection.rollback()
        return families


def _pair(prefix: str, what: str, waiting: int, oldest) -> list[GaugeMetricFamily]:
    """<prefix>_waiting and <prefix>_oldest_age_seconds."""
    return [
        GaugeMetricFamily(f"{prefix}_waiting", f"{what}.", value=waiting),
        GaugeMetricFamily(
            f"{prefix}_oldest_age_seconds", f"{what}: age of the oldest.", value=float(oldest or 0)
        ),
    ]


class _ThisProcess:
    """The default registry's metrics, when this process counts in memory (not multiprocess)."""

    def collect(self):
        return REGISTRY.collect()


def _multiprocess() -> bool:
    return getattr(values.ValueClass, "_multiprocess", False)


def scrape(database_gauges: DatabaseGauges | None) -> bytes:
    """The metrics in Prometheus' text format: every gunicorn worker's (multiprocess) or this
    process's, and the database gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if _multiprocess():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    if database_gauges is not None:
        registry.register(database_gauges)
    return generate_latest(registry)


def _refused(status: int, detail: str, start_response) -> list[bytes]:
    body = json.dumps({"type": "about:blank", "title": "Unauthorized", "status": status, "detail": detail})
    start_response(
        f"{status} Unauthorized",
        [
            ("Content-Type", "application/problem+json"),
            ("WWW-Authenticate", 'Bearer realm="metrics"'),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body.encode()]


class MetricsEndpoint:
    """GET /metrics as a WSGI app. With METRICS_TOKEN set, only a request bearing it (compared in
    constant time) is answered; others get a 401 problem document."""

    def __init__(self, observability: Observability, database_gauges: DatabaseGauges | None = None):
        self.token = observability.metrics_token.encode() if observability.metrics_token else None
        self.database_gauges = database_gauges

    def __call__(self, environ, start_response):
        if self.token is not None:
            scheme, _, offered = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), self.token):
                return _refused(
                    401,
                    "A scrape needs the metrics token: Authorization: Bearer <METRICS_TOKEN>.",
                    start_response,
                )
        body = scrape(self.database_gauges)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Cache-Control", "no-store")])
        return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature of the method it replaces
        pass  # every scrape would be a line: an idle worker logs nothing


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_worker_metrics(observability: Observability) -> WSGIServer | None:
    """Serves a worker process's /metrics on WORKER_METRICS_PORT (at HOST) in a thread; None when
    it is not set or metrics are off."""
    port = observability.worker_metrics_port
    if port is None or not observability.metrics_enabled:
        return None
    endpoint = MetricsEndpoint(observability)

    def app(environ, start_response):
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics\n"]
        return endpoint(environ, start_response)

    server = make_server(
        observability.worker_metrics_host,
        port,
        app,
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
