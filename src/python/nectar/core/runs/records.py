"""Runs in the database: recording finished runs (one statement each, or many at once for the
batched writer, writer.py), and completing queued ones."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from nectar.core.runs.metrics import count_run
from nectar.core.workflows.engine import RunOutcome, StepRecord
from nectar.core.workflows.expressions import json_safe, json_text
from nectar.shared.bad_input import check_text
from nectar.shared.jobs import QUEUED_ONCE
from nectar.shared.rejection import InputRejected


def sql_list(words: tuple[str, ...]) -> str:
    """Constant words as an SQL list, `('a', 'b')`, to write into statements."""
    return "(" + ", ".join(f"'{word}'" for word in words) + ")"


FINAL_STATUSES = ("succeeded", "failed", "cancelled")
FINAL_STATUSES_SQL = sql_list(FINAL_STATUSES)


IDEMPOTENCY_KEY_MAX = 200  # what workflow_runs.idempotency_key holds


# Keys the platform gives runs it starts itself (scheduled runs, called ones, alerts' error workflows):
# a caller's key that looked like one could skip a scheduled run or plant a called one.
INTERNAL_KEY_PREFIXES = ("schedule:", "call:", "alert:")


def checked_idempotency_key(key: str | None) -> str | None:
    """A caller's Idempotency-Key header, or InputRejected (400) when it holds what no text may (NUL, a
    lone surrogate), is longer than a run keeps or wears one of the platform's own prefixes."""
    if key is None:
        return None
    check_text(key, field="Idempotency-Key")
    if len(key) > IDEMPOTENCY_KEY_MAX:
        raise InputRejected(
            f"Idempotency-Key is at most {IDEMPOTENCY_KEY_MAX} characters.",
            field="Idempotency-Key",
            status=400,
        )
    if key.startswith(INTERNAL_KEY_PREFIXES):
        raise InputRejected(
            f"Idempotency-Key may not start with {' or '.join(INTERNAL_KEY_PREFIXES)}: those are the platform's.",
            field="Idempotency-Key",
            status=400,
        )
    return key


@dataclass(frozen=True)
class RunRequest:
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    trigger: str
    input: dict
    idempotency_key: str | None = None
    rerun_of: uuid.UUID | None = None


def jsonb_text(value) -> str:
    """JSON for a jsonb parameter. jsonb refuses NUL characters; json_safe's slower walk drops them
    only when the text shows one."""
    text = json_text(value)
    return json_text(json_safe(value)) if "\\u0000" in text else text


@dataclass(frozen=True)
class FinishedRun:
    """A run that has been executed and waits to be recorded."""

    id: uuid.UUID
    org_id: uuid.UUID
    request: RunRequest
    outcome: RunOutcome


def _run_row(run: FinishedRun) -> dict:
    request = run.request
    return {
        "id": run.id,
        "org_id": run.org_id,
        "workflow_id": request.workflow_id,
        "version_id": request.version_id,
        "trigger": request.trigger,
        "idempotency_key": request.idempotency_key,
        "rerun_of": request.rerun_of,
        "input": request.input,
        **_outcome_row(run.outcome),
    }


def _outcome_row(outcome: RunOutcome) -> dict:
    output = {"output": outcome.output}
    if outcome.failed_step is not None:  # where a retry starts again (recovery.py)
        output["failed_step"] = outcome.failed_step
    if (response := outcome.response) is not None:
        output["response"] = {"status": response.status, "headers": response.headers, "body": response.body}
    return {
        "status": outcome.status,
        "output": output,
        "error": outcome.error,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "duration_ms": outcome.duration_ms,
        "steps": [record_json(s) for s in outcome.steps],
    }


def record_json(record: StepRecord) -> dict:
    """A step's entry in its run's trace, as the `steps` column holds it."""
    return {
        "step_id": record.step_id,
        "step_type": record.step_type,
        "position": record.position,
        "attempt": record.attempt,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
    }


def record_from_json(data: dict | None) -> StepRecord | None:
    """The StepRecord of a trace entry read back (its times are ISO 8601 text in jsonb)."""
    if data is None:
        return None
    started, finished = (datetime.fromisoformat(data[f]) for f in ("started_at", "finished_at"))
    return StepRecord(**{**data, "started_at": started, "finished_at": finished})


_OUTCOME_FIELDS = (
    "status text, output jsonb, error text, started_at timestamptz, finished_at timestamptz, duration_ms int, "
    "steps jsonb"
)

# A failed run asks for its organization's alert rules to be checked (core/alerts), unless an alert
# started it (no loops) or the organization has no rule on. The check is one job per organization
# at a time: procrastinate's queueing lock refuses a second job waiting under the same lock, so a
# storm of failures queues one. `failed` names a row source with org_id, trigger and status.
CHECK_ALERTS_TASK = "core.check_alerts"
CHECK_ALERTS_QUEUE = "core"  # core's worker queue (jobs.QUEUE; jobs imports this module)
ALERT_TRIGGER = "alert"
TEST_TRIGGER = "test"  # a draft tested in the builder: no usage, no alerts
# Runs whose failure alerts no one: an alert's own runs (no loops) and tests of drafts, with the
# runs they call (calls.py gives those their caller's trigger).
SILENT_TRIGGERS = (ALERT_TRIGGER, TEST_TRIGGER)
SILENT_FAILURES = f"trigger NOT IN {sql_list(SILENT_TRIGGERS)}"


def check_alerts_sql(failed: str) -> str:
    return f"""
    INSERT INTO procrastinate_jobs (queue_name, task_name, queueing_lock, args)
    SELECT '{CHECK_ALERTS_QUEUE}', '{CHECK_ALERTS_TASK}', 'alerts:' || f.org_id, jsonb_build_object('org_id', f.org_id)
    FROM (SELECT DISTINCT org_id FROM {failed} WHERE status = 'failed' AND {SILENT_FAILURES}) AS f
    WHERE EXISTS (SELECT FROM alert_rules a WHERE a.org_id = f.org_id AND a.enabled)
    {QUEUED_ONCE}
"""  # noqa: S608 - built from constants only


# One statement writes any number of runs of one organization, their steps included, counts them
# for the plan's rate limit when given a bucket (endpoint calls), and asks for an alert check when
# one failed. In psycopg's parameter style, as the endpoint hot path binds it on a raw connection.
RECORD_RUNS_SQL = f"""
    WITH counted AS (
        INSERT INTO rate_limit_buckets (key, window_start, count)
        SELECT CAST(%(rate_key)s AS text), CAST(%(rate_window)s AS bigint), CAST(%(rate_count)s AS int)
        WHERE CAST(%(rate_key)s AS text) IS NOT NULL
        ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limit_buckets.count + EXCLUDED.count
    ), r AS (
        SELECT * FROM jsonb_to_recordset(CAST(%(runs)s AS jsonb)) AS r(id uuid, org_id uuid, workflow_id uuid,
             version_id uuid, trigger text, idempotency_key text, rerun_of uuid, input jsonb, {_OUTCOME_FIELDS})
    ), alerted AS ({check_alerts_sql("r")})
    INSERT INTO workflow_runs (id, org_id, workflow_id, version_id, trigger, status, idempotency_key, rerun_of,
                               input, output, error, queued_at, started_at, finished_at, duration_ms, active_ms,
                               steps)
    SELECT r.id, r.org_id, r.workflow_id, r.version_id, r.trigger, r.status, r.idempotency_key, r.rerun_of,
           r.input, r.output, r.error, r.started_at, r.started_at, r.finished_at, r.duration_ms, r.duration_ms,
           r.steps
    FROM r
"""  # noqa: S608 - only constants are filled in


def run_record_json(run: FinishedRun) -> str:
    """A run as RECORD_RUNS_SQL reads it, in JSON. The endpoint hot path makes it as soon as the
    call is answered, so what waits to be written is one string, not the run's objects."""
    return jsonb_text(_run_row(run))


def record_runs_params(
    record_jsons: list[str], rate_bucket: tuple[str, int] | None = None, *, calls: int | None = None
) -> dict:
    """RECORD_RUNS_SQL's parameters for runs of one organization (each from run_record_json), counting them
    in `rate_bucket`; or counting `calls`, when some calls were refused without a run."""
    rate_key, rate_window = rate_bucket or (None, None)
    return {
        "rate_key": rate_key,
        "rate_window": rate_window,
        "rate_count": len(record_jsons) if calls is None else calls,
        "runs": f"[{','.join(record_jsons)}]",
    }


def record_run(
    session: Session,
    org_id: uuid.UUID,
    request: RunRequest,
    outcome: RunOutcome,
    rate_bucket: tuple[str, int] | None = None,
    run_id: uuid.UUID | None = None,
) -> uuid.UUID:
    run = FinishedRun(run_id or uuid.uuid4(), org_id, request, outcome)
    session.connection().exec_driver_sql(
        RECORD_RUNS_SQL, record_runs_params([run_record_json(run)], rate_bucket)
    )
    count_run(request.trigger, outcome.status)
    return run.id


# The completion itself is the database's complete_workflow_run (migration 0027, where it says what
# it keeps): a function keeps its plan, which a statement sent as text would have made anew per run.
_COMPLETE_RUN_SQL = "SELECT status, error FROM complete_workflow_run(%(id)s, CAST(%(outcome)s AS jsonb))"
# Only a failed run asks for its alert rules to be checked (the rest is planned for nothing on the
# worker's hot path).
_COMPLETE_FAILED_RUN_SQL = f"""
    WITH completed AS (SELECT * FROM complete_workflow_run(%(id)s, CAST(%(outcome)s AS jsonb))),
    alerted AS ({check_alerts_sql("completed")})
    SELECT status, error FROM completed
"""  # noqa: S608 - only constants are filled in

# A run that could not be completed (its workflow raised, or its version is broken).
_FAIL_RUN_SQL = f"""
    WITH failed AS (
        UPDATE workflow_runs SET status = 'failed', error = %(error)s, finished_at = COALESCE(finished_at, now()),
               wake_at = NULL, waiting_for = NULL
        WHERE id = %(id)s AND status IN ('queued', 'running', 'waiting')  -- an end stands, a cancellation too
        RETURNING org_id, trigger, status
    ) {check_alerts_sql("failed")}
"""  # noqa: S608 - only constants are filled in

_SUSPEND_RUN_SQL = """
    UPDATE workflow_runs SET
           status = CASE WHEN status = 'cancelled' THEN status ELSE 'waiting' END,
           wake_at = CASE WHEN status = 'cancelled' THEN NULL ELSE CAST(%(wake_at)s AS timestamptz) END,
           waiting_for = CASE WHEN status = 'cancelled' THEN NULL ELSE CAST(%(waiting_for)s AS jsonb) END,
           steps = CAST(%(steps)s AS jsonb), started_at = COALESCE(started_at, %(started_at)s),
           active_ms = COALESCE(active_ms, 0) + %(active_ms)s
    WHERE id = %(id)s
    RETURNING status, error
"""


def outcome_statement(run_id: uuid.UUID, outcome: RunOutcome) -> tuple[str, dict]:
    """The one statement that writes an activation's outcome and steps (psycopg's parameter style):
    finished, or waiting (with when to wake it and what it waits for). The row's lock orders it
    with a cancel: a run cancelled first stays cancelled (with these steps), one cancelled later
    finds it final. It returns the run's status and error as written."""
    if outcome.status == "waiting":
        return _SUSPEND_RUN_SQL, {
            "id": run_id,
            "wake_at": outcome.wake_at,
            "waiting_for": jsonb_text(outcome.waiting_for),
            "steps": jsonb_text([record_json(s) for s in outcome.steps]),
            "started_at": outcome.started_at,
            "active_ms": outcome.duration_ms,
        }
    complete = _COMPLETE_FAILED_RUN_SQL if outcome.status == "failed" else _COMPLETE_RUN_SQL
    return complete, {"id": run_id, "outcome": jsonb_text(_outcome_row(outcome))}


def complete_run(session: Session, run_id: uuid.UUID, outcome: RunOutcome) -> tuple[str, str | None]:
    """Writes an activation's outcome in the session's transaction (outcome_statement); returns
    the run's status and error as written."""
    return tuple(session.connection().exec_driver_sql(*outcome_statement(run_id, outcome)).one())


def fail_run(session: Session, run_id: uuid.UUID, error: str) -> None:
    """Ends a run that has not ended (nor been cancelled) as failed with `error`, in the session's
    transaction: an error after a run's end committed leaves the run as it ended."""
    session.connection().exec_driver_sql(_FAIL_RUN_SQL, {"id": run_id, "error": error})
