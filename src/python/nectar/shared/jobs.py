"""Durable background work: procrastinate's job queue, in the one PostgreSQL database.

Web code enqueues with `enqueue(session, ...)` inside its own transaction, so a job exists
exactly when the change that needs it was committed. Each service binary's `worker` command runs
procrastinate's worker over that service's queue, with retries and backoff per task.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from datetime import datetime

import procrastinate
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from nectar.shared.cli import Command

_ENQUEUE = text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority, :lock, :queueing_lock, CAST(:args AS jsonb), "
    ":scheduled_at)::procrastinate_job_to_defer_v1])"
)


def enqueue(
    session: Session,
    task_name: str,
    args: dict,
    *,
    queue: str,
    scheduled_at: datetime | None = None,
    lock: str | None = None,
    priority: int = 0,
) -> None:
    """Adds a job in the session's transaction (procrastinate's own SQL function). Workers take
    higher `priority` first; jobs with one `lock` run one at a time, in order."""
    session.execute(
        _ENQUEUE,
        {
            "queue": queue,
            "task": task_name,
            "priority": priority,
            "lock": lock,
            "queueing_lock": None,
            "args": json.dumps(args),
            "scheduled_at": scheduled_at,
        },
    )


FINISHED_JOBS_KEPT_HOURS = 24


def add_queue_upkeep(blueprint: procrastinate.Blueprint, queue: str) -> str:
    """Adds the periodic upkeep every queue needs, and returns the stalled-job task's name:
    jobs of a dead worker (no heartbeat for 30 s) go back to the queue, so a crash mid-job never
    leaves work stuck as 'doing'; finished jobs older than a day are deleted, so frequent periodic
    tasks do not grow the queue's table for ever."""
    stalled_name = f"{queue}.retry_stalled_jobs"

    @blueprint.periodic(cron="*/2 * * * *", periodic_id=stalled_name)
    @blueprint.task(name=stalled_name, queue=queue, pass_context=True)
    async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        manager = context.app.job_manager
        for job in await manager.get_stalled_jobs(queue=queue):
            if job.task_name != stalled_name:
                await manager.retry_job(job)

    @blueprint.periodic(cron="41 * * * *", periodic_id=f"{queue}.remove_old_jobs")
    @blueprint.task(name=f"{queue}.remove_old_jobs", queue=queue, pass_context=True)
    async def remove_old_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
        await context.app.job_manager.delete_old_jobs(nb_hours=FINISHED_JOBS_KEPT_HOURS, queue=queue)

    return stalled_name


def job_app(url: URL, blueprint: procrastinate.Blueprint) -> procrastinate.App:
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4)
    )
    app.add_tasks_from(blueprint, namespace="")
    return app


def worker_command(build: Callable[[], tuple[procrastinate.App, list[str]]]) -> Command:
    """The `worker` command: runs the service's queues until SIGINT/SIGTERM (or, with --once,
    until they are empty)."""

    def run(args: argparse.Namespace) -> int:
        app, queues = build()
        logging.getLogger("procrastinate").setLevel(logging.INFO)
        print(f"worker: running jobs from queue {', '.join(queues)}", flush=True)
        # --once takes one job at a time: with several at once, a job waiting for its lock (held
        # by one running) would find the worker stopped once the queue looked empty.
        once = {"concurrency": 1} if args.once else {}
        app.run_worker(queues=queues, wait=not args.once, install_signal_handlers=True, **once)
        return 0

    return Command(
        help="run this service's background jobs (durable, retried) until stopped",
        run=run,
        configure=lambda parser: parser.add_argument(
            "--once", action="store_true", help="stop when the queues are empty"
        ),
    )
