"""Billing's background jobs on marketing's queue (merged into nectar.marketing.jobs, run by
`marketing.pex worker`): processing stored Stripe events, provisioning organizations in core and
keeping their plans in line, delivering the test checkout's events, and a sweep that re-queues
anything left behind."""

from __future__ import annotations

import datetime
import logging
import uuid
from dataclasses import dataclass

import procrastinate
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from nectar.core.contract import PLANS, CoreClient
from nectar.marketing.billing import events, provisioning, sandbox, usage
from nectar.marketing.billing.backends import BillingBackend, choose_backend
from nectar.marketing.billing.config import BillingConfig
from nectar.marketing.billing.plans import current_plans
from nectar.marketing.billing.queue import (
    DELIVER_SANDBOX_EVENTS,
    PROCESS_EVENT,
    PROVISION,
    QUEUE,
    REPORT_USAGE,
    SWEEP,
    SYNC_PLAN,
    enqueue_event,
    enqueue_plan_sync,
    enqueue_provision,
)
from nectar.marketing.billing.webhooks import WEBHOOK_PATH
from nectar.marketing.links import CORE_SIGN_IN_PATH, PORTAL_PATH
from nectar.shared.config import Service, Settings

log = logging.getLogger(__name__)
blueprint = procrastinate.Blueprint()
# Work left this long without a live job is re-queued by the sweep.
FORGOTTEN_AFTER_SECONDS = 120
# The longest wait between two tries of a job that keeps failing.
RETRY_CAP_SECONDS = 3600


class CappedBackoff(BaseRetryStrategy):
    """Exponential backoff (2, 4, 8 ... seconds) that levels off at `cap_seconds` and never gives
    up: a paying customer's organization must appear, and a Stripe event must be applied, once the
    cause is gone (core or Stripe back, a setting fixed), however long that takes. Meanwhile staff
    see the attempts and the last error on the subscription or the event."""

    def __init__(self, cap_seconds: int = RETRY_CAP_SECONDS):
        self.cap_seconds = cap_seconds

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision:
        wait = min(self.cap_seconds, 2 ** min(job.attempts + 1, 20))
        return RetryDecision(retry_in={"seconds": wait})


@dataclass(frozen=True)
class BillingWorker:
    engine: Engine
    settings: Settings
    config: BillingConfig
    # One client for every job, so its connections to core are reused.
    core: CoreClient
    backend: BillingBackend

    def event_context(self, session: Session) -> events.EventContext:
        return events.EventContext(
            plans=current_plans(session, self.backend), reread=self.backend.current_subscription
        )


_worker: BillingWorker | None = None


def bind(engine: Engine, settings: Settings, config: BillingConfig) -> None:
    """The database, settings and billing configuration the tasks use (the worker binds at start)."""
    global _worker
    core = CoreClient(settings.service_urls[Service.CORE], settings.service_token)
    _worker = BillingWorker(engine, settings, config, core, choose_backend(config))


def _bound() -> BillingWorker:
    assert _worker is not None, "nectar.marketing.billing.jobs.bind(...) before running the worker"
    return _worker


@blueprint.task(name=PROCESS_EVENT, queue=QUEUE, pass_context=False, retry=CappedBackoff())
def process_event(event_id: str) -> None:
    worker = _bound()
    with Session(worker.engine) as session:
        try:
            outcome = events.process_event(session, event_id, worker.event_context(session))
            session.commit()
        except Exception as error:
            session.rollback()
            events.record_failure(session, event_id, error)
            session.commit()
            raise
    log.info("stripe event %s: %s", event_id, outcome)


@blueprint.task(name=PROVISION, queue=QUEUE, pass_context=False, retry=CappedBackoff())
def provision(subscription_id: str) -> None:
    worker = _bound()
    with Session(worker.engine) as session:
        links = provisioning.WelcomeLinks(
            sign_in=worker.config.core_public_url + CORE_SIGN_IN_PATH,
            billing=worker.settings.public_url + PORTAL_PATH,
        )
        outcome = provisioning.provision(session, uuid.UUID(subscription_id), worker.core, links)
    log.info("subscription %s: %s", subscription_id, outcome)


@blueprint.task(name=SYNC_PLAN, queue=QUEUE, pass_context=False, retry=CappedBackoff())
def sync_plan(subscription_id: str) -> None:
    worker = _bound()
    with Session(worker.engine) as session:
        outcome = provisioning.sync_plan(session, uuid.UUID(subscription_id), worker.core)
    log.info("subscription %s: %s", subscription_id, outcome)


@blueprint.task(
    name=DELIVER_SANDBOX_EVENTS,
    queue=QUEUE,
    pass_context=False,
    retry=procrastinate.RetryStrategy(max_attempts=8, exponential_wait=2),
)
def deliver_sandbox_events(checkout: dict) -> None:
    worker = _bound()
    completed = sandbox.SandboxCheckout(**checkout)
    url = worker.settings.public_url + WEBHOOK_PATH
    sandbox.deliver(sandbox.checkout_events(completed), url, worker.config.webhook_secret)
    log.info("test checkout %s: events delivered to %s", completed.session_id, url)


@blueprint.periodic(cron="*/5 * * * *", periodic_id=SWEEP)
@blueprint.task(name=SWEEP, queue=QUEUE, pass_context=False, queueing_lock=SWEEP)
def sweep(timestamp: int) -> None:
    worker = _bound()
    with Session(worker.engine) as session:
        counts = requeue_forgotten(session)
        session.commit()
    if any(counts.values()):
        log.warning("billing sweep re-queued %s", counts)


@blueprint.periodic(cron="7 * * * *", periodic_id=REPORT_USAGE)
@blueprint.task(
    name=REPORT_USAGE, queue=QUEUE, pass_context=False, queueing_lock=REPORT_USAGE, retry=CappedBackoff()
)
def report_usage(timestamp: int) -> None:
    """Hourly: paid plans' days that are over, reported to the meter (usage.py)."""
    worker = _bound()
    if not worker.backend.reports_usage:
        return
    with Session(worker.engine) as session:
        now = datetime.datetime.now(datetime.UTC)
        counts = usage.report_due_usage(session, worker.backend, worker.config.meter_event_name, now)
    if counts["reported"] or counts["refused"]:
        log.info("usage reported to the meter: %s", counts)
    if counts["refused"]:
        log.warning(
            "the payment provider refused %s usage report(s): see admin's billing page", counts["refused"]
        )


# Each query skips what already has a job waiting or running (procrastinate's own table).
_FORGOTTEN_EVENTS = text(
    "SELECT e.id FROM stripe_events e WHERE e.processed_at IS NULL AND e.received_at < :cutoff "
    "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.task_name = :task "
    "AND j.args->>'event_id' = e.id AND j.status IN ('todo', 'doing')) ORDER BY e.received_at LIMIT 500"
)
_FORGOTTEN_PROVISIONING = text(
    "SELECT s.id FROM subscriptions s WHERE s.provisioning_status = 'pending' AND s.updated_at < :cutoff "
    "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.task_name = :task "
    "AND j.args->>'subscription_id' = s.id::text AND j.status IN ('todo', 'doing')) LIMIT 500"
)
# Plans that differ from what core was told (see events.desired_core_plan), unless core refused the
# change as invalid (422: final); one only retried (core down, a wrong token) is still swept.
_FORGOTTEN_PLANS = text(
    "SELECT s.id FROM subscriptions s WHERE s.organization_id IS NOT NULL "
    "AND (s.provisioning_error IS NULL OR s.provisioning_error NOT LIKE :refused) "
    "AND s.updated_at < :cutoff AND s.core_plan IS DISTINCT FROM (CASE WHEN s.status = ANY(:lapsed) THEN 'free' "
    "WHEN s.plan = ANY(:core_plans) THEN s.plan ELSE s.core_plan END) "
    "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.task_name = :task "
    "AND j.args->>'subscription_id' = s.id::text AND j.status IN ('todo', 'doing')) LIMIT 500"
)


def requeue_forgotten(session: Session, older_than_seconds: int = FORGOTTEN_AFTER_SECONDS) -> dict[str, int]:
    """Queues again what has no live job: events not processed, checkouts not provisioned, plans
    not in line with core (after a lost job, say, or a purged queue). Processing is idempotent, so a
    job queued twice does no harm; the check only keeps the queue short."""
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=older_than_seconds)
    event_ids = session.scalars(_FORGOTTEN_EVENTS, {"cutoff": cutoff, "task": PROCESS_EVENT}).all()
    unprovisioned = session.scalars(_FORGOTTEN_PROVISIONING, {"cutoff": cutoff, "task": PROVISION}).all()
    drifted = session.scalars(
        _FORGOTTEN_PLANS,
        {
            "cutoff": cutoff,
            "task": SYNC_PLAN,
            "lapsed": list(events.LAPSED),
            "core_plans": list(PLANS),
            "refused": provisioning.PLAN_REFUSED + "%",
        },
    ).all()
    for event_id in event_ids:
        enqueue_event(session, event_id)
    for subscription_id in unprovisioned:
        enqueue_provision(session, subscription_id)
    for subscription_id in drifted:
        enqueue_plan_sync(session, subscription_id)
    return {"events": len(event_ids), "provisioning": len(unprovisioned), "plans": len(drifted)}
