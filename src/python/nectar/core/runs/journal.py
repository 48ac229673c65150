"""A durable run's journal in PostgreSQL: the checkpoints of its steps that acted on the world or
waited (workflow_run_checkpoints), read once when an activation starts and written, one commit per
step, as the run goes (engine.py explains the replay they serve)."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nectar.core.runs.records import record_from_json, record_json
from nectar.core.workflows.engine import Checkpoint
from nectar.core.workflows.expressions import json_text
from nectar.schema.models import WorkflowRunCheckpoint

# A finished checkpoint is final: only a `waiting` one is replaced (by the wait's end).
_SAVE_SQL = text(
    "INSERT INTO workflow_run_checkpoints (org_id, run_id, step_key, status, output, error, record) "
    "VALUES (:org_id, :run_id, :key, :status, CAST(:output AS json), :error, CAST(:record AS json)) "
    "ON CONFLICT (org_id, run_id, step_key) DO UPDATE SET status = EXCLUDED.status, "
    "output = EXCLUDED.output, error = EXCLUDED.error, record = EXCLUDED.record, saved_at = now() "
    "WHERE workflow_run_checkpoints.status = 'waiting'"
)


class RunJournal:
    """The journal of run `run_id`, on a session scoped to its organization. `save` commits: the
    step's own writes in the session's transaction (its email) become durable with it. The
    session's other users (the run's effects) share `session_lock`."""

    def __init__(
        self,
        session: Session,
        org_id: uuid.UUID,
        run_id: uuid.UUID,
        session_lock: AbstractContextManager = nullcontext(),  # noqa: B008 - stateless, shareable
    ):
        self.session, self.org_id, self.run_id, self._session_lock = session, org_id, run_id, session_lock
        rows = session.scalars(select(WorkflowRunCheckpoint).where(WorkflowRunCheckpoint.run_id == run_id))
        self._saved = {
            row.step_key: Checkpoint(row.status, row.output, row.error, record_from_json(row.record))
            for row in rows
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
