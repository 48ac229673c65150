"""Putting asynchronous runs on core's queue: a queued run with its first activation, and the
activations that follow (jobs.py holds the tasks that run them).

Runs are shared out fairly between organizations. An organization's Nth waiting run is queued
with priority -N, so workers take every organization's first waiting run before anyone's second:
a thousand queued runs of one organization delay another's by one run each, at most. It may have
MAX_QUEUED_RUNS waiting to start and MAX_UNFINISHED_RUNS that have not ended; one more is refused
(QueueFull) until they drain, so a workflow that calls others in a loop cannot fill the queue and the
database for everyone. And its runs
go round ORG_MAX_WORKER_RUNS procrastinate locks (jobs with one lock run one at a time), so it
holds at most that many of all workers' slots (WORKER_CONCURRENCY each); the rest stay free for
other organizations however long its runs take.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import text

from nectar.core.contract.runs import QUEUE, RUN_TASK, WAKE_TASK
from nectar.core.runs.records import TEST_TRIGGER
from nectar.core.usage import quota_used_up
from nectar.core.workflows.expressions import json_safe
from nectar.schema.models import Organization, WorkflowRun
from nectar.shared import throttle
from nectar.shared.jobs import job_statement

MAX_QUEUED_RUNS = 10_000
# Runs that have not ended (queued, running or waiting, say thirty days for an approval): a workflow
# that starts others that wait cannot fill the database either.
MAX_UNFINISHED_RUNS = 100_000


class QueueFull(Exception):
    """The organization already has MAX_QUEUED_RUNS runs waiting to start, or MAX_UNFINISHED_RUNS
    that have not ended."""

    retry_after = 60  # seconds: a 429's Retry-After


class QuotaReached(QueueFull):
    """A counted limit is reached until `resets_at` (a Unix time): the plan's runs this month when it
    has no overage (usage.py), or the test runs of this hour (TooManyTestRuns)."""

    def __init__(self, detail: str, limit: int, resets_at: float):
        super().__init__(detail)
        self.limit, self.resets_at = limit, resets_at
        self.retry_after = max(1, int(resets_at - time.time()))


class TooManyTestRuns(QuotaReached):
    """The organization started MAX_TEST_RUNS_PER_HOUR test runs this hour."""

    def __init__(self, resets_at: float):
        super().__init__(
            f"This organization started {MAX_TEST_RUNS_PER_HOUR} test runs this hour; "
            "more can be started when the next one begins.",
            MAX_TEST_RUNS_PER_HOUR,
            resets_at,
        )


# Testing a draft is not usage, so it has a bound of its own: a key that may write workflows could
# otherwise loop test runs (and the runs they call, tests too) as free work past any quota. Counted
# in rate_limit_buckets within the run's transaction (shared/throttle.py): the count holds under
# concurrent requests, a run not queued after all is not counted, and deleting a workflow with its
# runs gives nothing back.
MAX_TEST_RUNS_PER_HOUR = 100


def _count_test_run(session, org_id: uuid.UUID) -> None:
    limit, now = throttle.Limit(events=MAX_TEST_RUNS_PER_HOUR, window_seconds=3600), time.time()
    if throttle.take(session, [(f"core.test-runs:{org_id}", limit)], now) is not None:
        raise TooManyTestRuns(limit.window_start(now) + limit.window_seconds)


# Both counts in one index-only scan, each only as far as its limit needs.
_UNFINISHED_RUNS = text(
    "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FROM (SELECT status FROM workflow_runs "
    "WHERE org_id = :org_id AND status IN ('queued', 'running', 'waiting') LIMIT :most) w"
)


def queue_run(
    session,
    org_id: uuid.UUID,
    workflow_id,
    version_id,
    trigger: str,
    run_input: dict,
    *,
    key=None,
    rerun_of=None,
    parent_run_id=None,
    call_depth: int = 0,
    definition: dict | None = None,
):
    """Records a queued run and its job in the caller's transaction; returns the run's id. The job
    waits behind the organization's runs already waiting (see the module's docstring). A run
    called by another one names it (`parent_run_id`) and how deeply calls are nested. A test run
    gives the `definition` it runs (a draft); others run their version's. QueueFull when the
    organization has MAX_QUEUED_RUNS waiting to start or MAX_UNFINISHED_RUNS not ended already,
    QuotaReached when its plan's runs this month are used, TooManyTestRuns for a test run past
    MAX_TEST_RUNS_PER_HOUR (nothing is written then)."""
    waiting, unfinished = session.execute(
        _UNFINISHED_RUNS, {"org_id": org_id, "most": MAX_UNFINISHED_RUNS}
    ).one()
    if waiting >= MAX_QUEUED_RUNS:
        raise QueueFull(
            f"This organization already has {MAX_QUEUED_RUNS:,} runs waiting to start; "
            "new ones are refused until they drain."
        )
    if unfinished >= MAX_UNFINISHED_RUNS:
        raise QueueFull(
            f"This organization already has {MAX_UNFINISHED_RUNS:,} runs that have not ended (queued, running "
            "or waiting); new ones are refused until some end or are cancelled."
        )
    if trigger == TEST_TRIGGER:
        _count_test_run(session, org_id)
    else:  # testing a draft is not usage
        # Runs not ended count too: usage counts a run when it ends, and a burst of queued runs
        # would otherwise all start past the quota.
        org = session.get(Organization, org_id)
        used_up = quota_used_up(
            session.get_bind(),
            org_id,
            org.plan if org else None,
            under_way=unfinished,
            max_age=current_app.config["NECTAR_SETTINGS"].cache_max_age,
        )
        if used_up is not None:
            raise QuotaReached(str(used_up), used_up.limit, used_up.resets_at.timestamp())
    run_id = uuid.uuid4()
    session.add(
        WorkflowRun(
            id=run_id,
            org_id=org_id,
            workflow_id=workflow_id,
            version_id=version_id,
            trigger=trigger,
            status="queued",
            idempotency_key=key,
            rerun_of=rerun_of,
            parent_run_id=parent_run_id,
            call_depth=call_depth,
            input=json_safe(run_input),
            definition=definition,
        )
    )
    session.flush()
    schedule_activation(session, org_id, run_id, priority=-waiting)
    return run_id


def schedule_activation(
    session, org_id: uuid.UUID, run_id: uuid.UUID, at: datetime | None = None, *, priority: int = 0
) -> None:
    """Queues the run's next activation (now, or at `at`) in the caller's transaction (activation_job)."""
    session.connection().exec_driver_sql(*activation_job(org_id, run_id, at, priority=priority))


def activation_job(
    org_id: uuid.UUID, run_id: uuid.UUID, at: datetime | None = None, *, priority: int = 0
) -> tuple[str, dict]:
    """The statement that queues the run's next activation (now, or at `at`).

    A run always takes the same of its organization's lanes (procrastinate locks), so its
    activations never overlap, whoever queued them, and the organization never holds more than
    ORG_MAX_WORKER_RUNS of the workers' slots. A job waiting for its lock also holds back every
    later job with that lock, so a wake-up for later is a lock-free job of its own that queues the
    activation when its time comes: a timeout thirty days away never delays an event that arrives
    first."""
    args = {"org_id": str(org_id), "run_id": str(run_id)}
    if at is not None and at > datetime.now(UTC):
        return job_statement(WAKE_TASK, args, queue=QUEUE, scheduled_at=at)
    lanes = current_app.config["NECTAR_SETTINGS"].org_max_worker_runs
    lane = uuid.UUID(str(run_id)).int % lanes
    return job_statement(RUN_TASK, args, queue=QUEUE, priority=priority, lock=f"{RUN_TASK}:{org_id}:{lane}")
