"""Durable background work: procrastinate's job queue, in the one PostgreSQL database.

Web code enqueues with `enqueue(session, ...)` inside its own transaction, so a job exists
exactly when the change that needs it was committed. Each service binary's `worker` command runs
procrastinate's worker over that service's queue, with retries and backoff per task.

The worker outlives the database: procrastinate's worker stops itself when it loses its connection,
so `worker` runs it under a loop that, after a database error, closes its pool, waits for the
database with backoff (1 s doubling to 30 s), and starts it again, with its periodic tasks and its
LISTEN. An outage is logged once when it starts and once when it ends. SIGINT and SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import procrastinate
import psycopg
from procrastinate import manager
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Job
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from nectar.shared.cli import Command
from nectar.shared.config import load_observability
from nectar.shared.database import NO_PREPARED_STATEMENTS, is_database_outage, libpq_dsn
from nectar.shared.logs import announce
from nectar.shared.metrics import serve_worker_metrics, use_single_process_values

log = logging.getLogger(__name__)

_ENQUEUE_SQL = (
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(%(queue)s, %(task)s, %(priority)s, %(lock)s, %(queueing_lock)s, "
    "CAST(%(args)s AS jsonb), %(scheduled_at)s)::procrastinate_job_to_defer_v1])"
)


def job_statement(
    task_name: str,
    args: dict,
    *,
    queue: str,
    scheduled_at: datetime | None = None,
    lock: str | None = None,
    priority: int = 0,
) -> tuple[str, dict]:
    """The statement that adds a job (procrastinate's own SQL function), in psycopg's parameter
    style: what `enqueue` runs, and what a hot path sends with its other statements in one round
    trip (database.in_one_round_trip). Workers take higher `priority` first; jobs with one `lock`
    run one at a time, in order."""
    return _ENQUEUE_SQL, {
        "queue": queue,
        "task": task_name,
        "priority": priority,
        "lock": lock,
        "queueing_lock": None,
        "args": json.dumps(args),
        "scheduled_at": scheduled_at,
    }


def enqueue(session: Session, task_name: str, args: dict, **job) -> None:
    """Adds a job in the session's transaction (job_statement says which options it takes)."""
    session.connection().exec_driver_sql(*job_statement(task_name, args, **job))


# Added only when no job waits under the same queueing lock already (procrastinate's unique index
# on the lock of jobs still to do); otherwise nothing happens. For INSERTs into procrastinate_jobs.
QUEUED_ONCE = "ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING"
_ENQUEUE_ONCE = text(
    "INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args, scheduled_at) "  # noqa: S608
    f"VALUES (:queue, :task, :queueing_lock, CAST(:args AS jsonb), :scheduled_at) {QUEUED_ONCE}"
)


def enqueue_once(
    session: Session,
    task_name: str,
    args: dict,
    *,
    queue: str,
    queueing_lock: str,
    scheduled_at: datetime | None = None,
) -> bool:
    """Adds a job in the session's transaction unless one with the same queueing lock is waiting
    to be done; True when it was added."""
    params = {
        "queue": queue,
        "task": task_name,
        "queueing_lock": queueing_lock,
        "args": json.dumps(args),
        "scheduled_at": scheduled_at,
    }
    return session.execute(_ENQUEUE_ONCE, params).rowcount == 1


FINISHED_JOBS_KEPT_HOURS = 24


# A worker says it is alive every HEARTBEAT_SECONDS; one silent for STALLED_AFTER_SECONDS is dead
# and its jobs are handed to others. Jobs queued for later (a run's wake-up) are looked for every
# POLL_SECONDS (a wake-up's delay: 0.5 s gave a resume p50 of 420 ms, 0.2 s 200 ms; an idle worker's
# poll is one indexed query); jobs queued for now arrive at once through LISTEN/NOTIFY.
HEARTBEAT_SECONDS = 2.0
STALLED_AFTER_SECONDS = 10.0
POLL_SECONDS = 0.2
LISTEN_CHECK_SECONDS = 10.0  # a silent listening connection is checked this often
WORKER_TIMING = {
    "update_heartbeat_interval": HEARTBEAT_SECONDS,
    "stalled_worker_timeout": STALLED_AFTER_SECONDS,
    "fetch_job_polling_interval": POLL_SECONDS,
}


def add_queue_upkeep(blueprint: procrastinate.Blueprint, queue: str) -> str:
    """Adds the periodic upkeep every queue needs, and returns the stalled-job task's name:
    jobs of a dead worker (no heartbeat for STALLED_AFTER_SECONDS, checked every ten seconds) go
    back to the queue, so a worker killed mid-job costs a run about twenty seconds, never the run;
    finished jobs older than a day are deleted, so frequent periodic tasks do not grow the queue's
    table for ever."""
    stalled_name = f"{queue}.retry_stalled_jobs"

    @blueprint.periodic(cron="* * * * * */10", periodic_id=stalled_name)  # the sixth field: seconds
    @blueprint.task(name=stalled_name, queue=queue, pass_context=True)
    async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        manager = context.app.job_manager
        for job in await manager.get_stalled_jobs(queue=queue, seconds_since_heartbeat=STALLED_AFTER_SECONDS):
            if job.task_name == stalled_name:
                continue
            try:
                await manager.retry_job(job)
            except procrastinate.exceptions.UniqueViolation:
                # The same work is queued again under its queueing lock (a periodic task's next
                # run): that job does it; this one ends.
                await manager.finish_job(job, status=procrastinate.jobs.Status.FAILED, delete_job=False)

    @blueprint.periodic(cron="41 * * * *", periodic_id=f"{queue}.remove_old_jobs")
    @blueprint.task(name=f"{queue}.remove_old_jobs", queue=queue, pass_context=True)
    async def remove_old_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        await context.app.job_manager.delete_old_jobs(nb_hours=FINISHED_JOBS_KEPT_HOURS, queue=queue)

    return stalled_name


POOL_WAIT_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5
RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class JobConnector(procrastinate.PsycopgConnector):
    """procrastinate's psycopg connector, which also knows how to ask whether the database answers
    (without opening a pool, whose every failed attempt would be logged), and LISTENs for new jobs
    on a direct connection of its own (`listen_conninfo`): behind PgBouncer in transaction mode
    the pooled one would hear nothing."""

    def __init__(self, conninfo: str, listen_conninfo: str | None = None):
        # A query waits at most POOL_WAIT_SECONDS for a connection, so a worker notices an outage
        # within seconds and a stop is never held up by a pool waiting for the server.
        super().__init__(
            conninfo=conninfo,
            min_size=1,
            max_size=4,
            timeout=POOL_WAIT_SECONDS,
            kwargs=dict(NO_PREPARED_STATEMENTS),
        )
        self.conninfo = conninfo
        self.listen_conninfo = listen_conninfo or conninfo

    async def listen_notify(self, on_notification, channels) -> None:
        """procrastinate's LISTEN for new jobs, on the listen connection. Where that is the pool's
        own database, losing it is an outage (raised, as procrastinate does). A listen URL of its own
        that cannot be reached is said once and tried again with backoff while the worker goes on:
        it finds jobs by polling every POLL_SECONDS anyway."""
        if self.listen_conninfo == self.conninfo:
            await super().listen_notify(on_notification, channels)
            return
        delay, said = RECONNECT_FIRST_SECONDS, False
        while True:
            try:
                async with await _connection_of_its_own(self.listen_conninfo) as connection:
                    for channel in channels:
                        await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if said:
                        log.info("worker: listening for new jobs again")
                    delay, said = RECONNECT_FIRST_SECONDS, False
                    while True:
                        async for notice in connection.notifies(timeout=LISTEN_CHECK_SECONDS):
                            await on_notification(channel=notice.channel, payload=notice.payload)
                        await connection.execute("SELECT 1")  # a connection lost without a word
            except psycopg.Error as error:
                if not said:
                    log.warning(
                        "worker: cannot listen for new jobs (%s); finding them by polling every %g s",
                        _one_line(error),
                        POLL_SECONDS,
                    )
                    said = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def database_answers(self) -> bool:
        """Whether one connection can be made and answers now; other errors (a wrong password,
        say) are raised, since waiting would not end them."""
        try:
            async with await _connection_of_its_own(self.conninfo) as connection:
                await connection.execute("SELECT 1")
        except psycopg.Error as error:
            if is_database_outage(error):
                return False
            raise
        return True


def _connection_of_its_own(conninfo: str) -> Awaitable[psycopg.AsyncConnection]:
    """A connection outside procrastinate's pool, in autocommit; it prepares nothing on the server
    (the URL may go through PgBouncer)."""
    return psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, connect_timeout=PROBE_TIMEOUT_SECONDS, **NO_PREPARED_STATEMENTS
    )


class JobManager(manager.JobManager):
    """procrastinate's, which leaves alone the jobs whose tasks ended them themselves (OwnJob)."""

    def __init__(self, connector: procrastinate.BaseConnector):
        super().__init__(connector)
        self.ended_by_their_task: set[int] = set()

    async def finish_job(self, job: Job, *args, **kwargs) -> None:
        if not self._ended_by_its_task(job):
            await super().finish_job(job, *args, **kwargs)

    async def retry_job(self, job: Job, *args, **kwargs) -> None:
        if not self._ended_by_its_task(job):  # it failed after its end committed: nothing to retry
            await super().retry_job(job, *args, **kwargs)

    def _ended_by_its_task(self, job: Job) -> bool:
        try:
            self.ended_by_their_task.remove(job.id)
        except KeyError:
            return False
        return True


# The job succeeds, as the worker would mark it (procrastinate's function: its events, attempts).
# Handed back to the queue meanwhile (its worker was taken for dead), it ends too, as the worker's
# own end would have done: running it again would only repeat the activation. Taken by another
# worker since, it is that worker's to end.
_END_OWN_JOB_SQL = (
    "SELECT procrastinate_finish_job_v1(id, 'succeeded', false) FROM procrastinate_jobs "
    "WHERE id = %(job)s AND (status = 'todo' OR (status = 'doing' AND worker_id = %(worker)s))"
)


@dataclass(frozen=True)
class OwnJob:
    """The job a task is running, for a task whose last transaction ends it: that transaction
    sends `end_statement`, and once it committed, `ended()` tells the worker not to end it again.
    The job then ends with the task's work, atomically, and costs one transaction fewer."""

    id: int
    worker_id: int | None  # the worker running it
    manager: JobManager

    @property
    def end_statement(self) -> tuple[str, dict]:
        return _END_OWN_JOB_SQL, {"job": self.id, "worker": self.worker_id}

    def ended(self) -> None:
        self.manager.ended_by_their_task.add(self.id)


def own_job(context: procrastinate.JobContext) -> OwnJob:
    """The running job of a task that takes its context (`pass_context=True`)."""
    assert context.job.id is not None and isinstance(context.app.job_manager, JobManager)
    return OwnJob(context.job.id, context.job.worker_id, context.app.job_manager)


def job_app(
    url: URL, *blueprints: procrastinate.Blueprint, listen_url: URL | None = None
) -> procrastinate.App:
    """procrastinate over the database at `url` with the blueprints' tasks, listening for new jobs
    on `listen_url` (default `url`; a direct connection where `url` goes through PgBouncer)."""
    listen = libpq_dsn(listen_url) if listen_url is not None else None
    app = procrastinate.App(connector=JobConnector(libpq_dsn(url), listen))
    app.job_manager = JobManager(app.connector)
    for blueprint in blueprints:
        app.add_tasks_from(blueprint, namespace="")
    return app


async def run_worker_through_outages(
    app: procrastinate.App, queues: list[str], *, wait: bool = True, **options
) -> None:
    """Runs procrastinate's worker over `queues` until SIGINT or SIGTERM (or, without `wait`, until
    they are empty), through database outages of any length: after a database error, or when the
    worker stopped itself (as procrastinate's does when a side task loses its connection), the
    pool is closed, the database is awaited with backoff, and a new worker starts on a new pool.
    A first signal stops the worker gracefully (running jobs finish); a second one at once."""
    stop = _stop_on_signals()
    down_since: float | None = None
    while True:
        try:
            async with app.open_async():
                if down_since is not None:
                    log.info(
                        "the database answers again after %.0f s; working on queue %s again",
                        time.monotonic() - down_since,
                        ", ".join(queues),
                    )
                    down_since = None
                await _run_until(
                    stop,
                    app.run_worker_async(
                        queues=queues, wait=wait, install_signal_handlers=False, **WORKER_TIMING, **options
                    ),
                )
        except Exception as error:
            if not is_database_outage(error):
                raise
            reason = _one_line(error)
        else:
            if stop.is_set() or not wait:
                return
            reason = "the worker stopped itself"
        if stop.is_set():
            return
        if down_since is None:
            down_since = time.monotonic()
            log.warning(
                "lost the database (%s); trying again with backoff, at most every %.0f s",
                reason,
                RECONNECT_MAX_SECONDS,
            )
        if not await _database_back(app.connector, stop):
            return


def _stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM; the next one gets the default handling."""
    loop, stop = asyncio.get_running_loop(), asyncio.Event()

    def requested() -> None:
        stop.set()
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)

    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, requested)
    return stop


async def _run_until(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """Runs `work` until it ends, or cancels it once `stop` is set: procrastinate's worker stops
    gracefully when cancelled (running jobs finish, the worker is unregistered)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not stop.is_set():
            raise


async def _database_back(connector: JobConnector, stop: asyncio.Event) -> bool:
    """Waits until the database answers (True) or a stop is requested (False), trying after 1 s,
    then twice as long each time, at most RECONNECT_MAX_SECONDS apart."""
    delay = RECONNECT_FIRST_SECONDS
    while True:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return False
        except TimeoutError:
            pass
        if await connector.database_answers():
            return True
        delay = min(delay * 2, RECONNECT_MAX_SECONDS)


def _one_line(error: BaseException) -> str:
    while isinstance(error, ConnectorException) and error.__cause__:
        error = error.__cause__  # procrastinate's own says only "Database error."
    message = str(error).strip()
    return f"{type(error).__name__}: {message.splitlines()[0]}" if message else type(error).__name__


ROUTINE_ACTIONS = {"periodic_task_deferred", "start_job", "job_success"}


class WorkerLogFilter(logging.Filter):
    """What a worker's log says, so that an operator reads each thing once. A database outage is
    said by run_worker_through_outages' one warning, so procrastinate's (and asyncio's) records of
    it are left out: a side task that lost its connection, a job's status that could not be saved,
    each with its traceback. A job the outage interrupted is still logged, in one line, as a
    warning (it is retried once the database is back). psycopg's warning that it could not cancel
    a query (its connection was cut) is the outage again. The routine of periodic upkeep (three
    lines per run, every few seconds on an idle queue) is left out too; its failures are logged.
    Any other job's start and success are DEBUG lines (LOG_LEVEL=DEBUG shows them): a working
    queue's log says what went wrong, not everything that went right."""

    def __init__(self, periodic_tasks: set[str]):
        super().__init__()
        self.periodic_tasks = periodic_tasks

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "psycopg" and record.getMessage().startswith("query cancellation"):
            return False
        if not record.name.startswith(("procrastinate", "asyncio")):
            return True
        job = getattr(record, "job", None)
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_database_outage(error):
            if job is None:
                return False
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.getMessage()} ({_one_line(error)})"
            record.args = None
            return True
        if getattr(record, "action", None) not in ROUTINE_ACTIONS or job is None:
            return True
        if job.get("task_name") in self.periodic_tasks:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def _quiet_worker_setup() -> None:
    """Before the app is built: registering its tasks and schedules says a dozen lines at INFO about
    nothing that went wrong; `worker: running jobs from queue ...` says the worker started, once."""
    logging.getLogger("procrastinate").setLevel(logging.INFO)
    for registration in ("procrastinate.blueprints", "procrastinate.periodic"):
        logging.getLogger(registration).setLevel(logging.WARNING)
    # psycopg's pool warns on every failed connection attempt; the outage's warning says it once.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _quiet_worker_logs(app: procrastinate.App) -> None:
    quiet = WorkerLogFilter({name for name, _periodic_id in app.periodic_registry.periodic_tasks})
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)


def worker_command(build: Callable[[], tuple[procrastinate.App, list[str]]]) -> Command:
    """The `worker` command: runs the service's queues until SIGINT/SIGTERM (or, with --once,
    until they are empty), through database outages."""

    def run(args: argparse.Namespace) -> int:
        _quiet_worker_setup()
        use_single_process_values()  # before the first value: counted here, served by the worker itself
        app, queues = build()
        _quiet_worker_logs(app)
        metrics = serve_worker_metrics(load_observability())
        if metrics is not None:
            announce(f"worker: metrics on port {metrics.server_port} at /metrics")
        announce(f"worker: running jobs from queue {', '.join(queues)}")
        # --once takes one job at a time: with several at once, a job waiting for its lock (held
        # by one running) would find the worker stopped once the queue looked empty.
        once = {"concurrency": 1} if args.once else {}
        asyncio.run(run_worker_through_outages(app, queues, wait=not args.once, **once))
        return 0

    return Command(
        help="run this service's background jobs (durable, retried) until stopped",
        run=run,
        configure=lambda parser: parser.add_argument(
            "--once", action="store_true", help="stop when the queues are empty"
        ),
    )
