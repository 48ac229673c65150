"""Marketing's background jobs, run by `marketing.pex worker`: the email outbox sender, campaign
dispatch, and billing's jobs (nectar.marketing.billing.jobs), all on the "marketing" queue."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import procrastinate
from sqlalchemy import URL, Engine, create_engine

from nectar.marketing.billing import jobs as billing_jobs
from nectar.marketing.billing.queue import QUEUE  # one queue for all of marketing's jobs
from nectar.marketing.email import outbox
from nectar.marketing.email.smtp import SmtpSettings
from nectar.marketing.links import Links
from nectar.marketing.newsletter import campaigns
from nectar.shared.database import engine_options
from nectar.shared.jobs import add_queue_upkeep

blueprint = procrastinate.Blueprint()
add_queue_upkeep(blueprint, QUEUE)  # stalled jobs back to the queue, old finished ones removed
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerContext:
    engine: Engine
    links: Links
    smtp: SmtpSettings


_context: WorkerContext | None = None


def worker_engine(database_url: URL) -> Engine:
    """The worker's engine, named nectar-marketing-worker in pg_stat_activity. Pre-ping: between
    jobs a pooled connection may sit idle for long."""
    return create_engine(database_url, **{**engine_options("marketing-worker"), "pool_pre_ping": True})


def bind(engine: Engine, links: Links, smtp: SmtpSettings) -> None:
    global _context
    _context = WorkerContext(engine, links, smtp)
    if not smtp.configured:
        log.warning("SMTP_HOST is not set: email stays in the outbox, unsent (admin shows it)")


def _bound() -> WorkerContext:
    assert _context is not None, "bind(...) before running the worker"
    return _context


# Every 5 seconds (procrastinate's cron takes seconds as a sixth field). The queueing lock keeps at
# most one waiting, so a slow SMTP server never makes them pile up.
@blueprint.periodic(cron="* * * * * */5")
@blueprint.task(
    name="marketing.flush_outbox", queue=QUEUE, pass_context=True, queueing_lock="marketing.flush_outbox"
)
def flush_outbox(job: procrastinate.JobContext, timestamp: int) -> None:
    context = _bound()
    outbox.flush(context.engine, context.smtp, worker_id=job.job.worker_id)


# One dispatcher at a time (lock), every 10 seconds: "send now" in admin goes out within seconds.
@blueprint.periodic(cron="* * * * * */10")
@blueprint.task(
    name="marketing.dispatch_campaigns",
    queue=QUEUE,
    pass_context=False,
    lock="marketing.dispatch_campaigns",
    queueing_lock="marketing.dispatch_campaigns",
)
def dispatch_campaigns(timestamp: int) -> None:
    context = _bound()
    campaigns.dispatch_due(context.engine, context.links)


# Billing's tasks keep their own names (no namespace prefix): billing enqueues them by name.
blueprint.add_tasks_from(billing_jobs.blueprint, namespace="")
