"""A durable run's journal in PostgreSQL: the checkpoints of its steps that acted on the world or
waited (workflow_run_checkpoints), read once when an activation starts and written, one commit per
step, as the run goes (engine.py explains the replay they serve)."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from nectar.core.runs.records import record_from_json, record_json
from nectar.core.workflows.engine import Checkpoint
from nectar.core.workflows.expressions import json_text
from nectar.shared.database import SET_TENANT_SQL, in_one_round_trip


@dataclass(frozen=True)
class ClaimedRun:
    """What an activation needs of its run, read as it starts."""

    id: uuid.UUID
    org_id: uuid.UUID
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    definition: dict | None  # a draft's (a test run), else the version's
    input: dict | None
    call_depth: int
    trigger: str
    parent_run_id: uuid.UUID | None
    queued_at: datetime


# The run with its journal's checkpoints, read (not written: most runs finish before anyone could see
# them running, and a status change rewrites the row and ten index entries), by the database's
# claimed_workflow_run (migration 0027: a function keeps its plan). RunInbox.cancelled shows a run
# running once it gets to a step that may take time.
_CLAIM_SQL = "SELECT * FROM claimed_workflow_run(%(run)s)"


def claim_run(engine: Engine, org_id: uuid.UUID, run_id: uuid.UUID) -> tuple[ClaimedRun, list] | None:
    """An activation's start, in one round trip (the worker's hot path): run `run_id` read with its
    journal's checkpoints (rows for RunJournal, which reads them where a bad one fails the run), or
    None when it has ended (or is not there)."""
    _, claimed = in_one_round_trip(engine, [(SET_TENANT_SQL, (str(org_id),)), (_CLAIM_SQL, {"run": run_id})])
    if not claimed:
        return None
    *run, checkpoints = claimed[0]
    return ClaimedRun(*run), checkpoints or []


# "running" is for people to see: a crash that loses it loses nothing (the job is retried and the
# run resumes from its journal), so its commit does not wait for the disk. A run cancelled, or
# ended, meanwhile keeps its status; either way the statement answers the run's status.
_SCOPE_NO_FLUSH_SQL = SET_TENANT_SQL + ", set_config('synchronous_commit', 'off', true)"
_SHOW_RUNNING_SQL = """
    WITH shown AS (
        UPDATE workflow_runs SET status = 'running', started_at = COALESCE(started_at, now())
        WHERE id = %(run)s AND status IN ('queued', 'waiting') RETURNING status
    )
    SELECT COALESCE((SELECT status FROM shown), (SELECT status FROM workflow_runs WHERE id = %(run)s))
"""


def show_running(engine: Engine, org_id: uuid.UUID, run_id: uuid.UUID) -> str | None:
    """Shows a queued or waiting run as running, committed at once on a connection of its own (the
    run's session may hold a step's writes that must commit only with its checkpoint); returns the
    run's status."""
    _, shown = in_one_round_trip(
        engine, [(_SCOPE_NO_FLUSH_SQL, (str(org_id),)), (_SHOW_RUNNING_SQL, {"run": run_id})]
    )
    return shown[0][0] if shown else None


# A finished checkpoint is final: only a `waiting` one is replaced (by the wait's end).
_SAVE_SQL = text(
    "INSERT INTO workflow_run_checkpoints (org_id, run_id, step_key, status, output, error, record) "
    "VALUES (:org_id, :run_id, :key, :status, CAST(:output AS json), :error, CAST(:record AS json)) "
    "ON CONFLICT (org_id, run_id, step_key) DO UPDATE SET status = EXCLUDED.status, "
    "output = EXCLUDED.output, error = EXCLUDED.error, record = EXCLUDED.record, saved_at = now() "
    "WHERE workflow_run_checkpoints.status = 'waiting'"
)


class RunJournal:
    """The journal of run `run_id`, on a session scoped to its organization, holding the checkpoints
    `saved` so far (claim_run's rows: step key, status, output, error, record). `save` commits: the
    step's own writes in the session's transaction (its email) become durable with it. The session's
    other users (the run's effects) share `session_lock`."""

    def __init__(
        self,
        session: Session,
        org_id: uuid.UUID,
        run_id: uuid.UUID,
        saved: list,
        session_lock: AbstractContextManager = nullcontext(),  # noqa: B008 - stateless, shareable
    ):
        self.session, self.org_id, self.run_id, self._session_lock = session, org_id, run_id, session_lock
        self._saved = {
            key: Checkpoint(status, output, error, record_from_json(record))
            for key, status, output, error, record in saved
        }

    def recall(self, key: str) -> Checkpoint | None:
        return self._saved.get(key)

    def save(self, key: str, checkpoint: Checkpoint) -> None:
        with self._session_lock:
            self.session.execute(
                _SAVE_SQL,
                {
                    "org_id": self.org_id,
                    "run_id": self.run_id,
                    "key": key,
                    "status": checkpoint.status,
                    "output": json_text(checkpoint.output),
                    "error": checkpoint.error,
                    "record": json_text(record_json(checkpoint.record)) if checkpoint.record else None,
                },
            )
            self.session.commit()
            self._saved[key] = checkpoint

    def effect_key(self, key: str) -> str:
        """A UUID named by the run and the step key: the same on every replay, different for
        every step, iteration and run."""
        return str(uuid.uuid5(self.run_id, key))
