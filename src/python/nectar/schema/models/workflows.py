"""Core: workflows and their versions, runs and step runs, and the HTTP endpoints bound to them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from nectar.schema.models.columns import (
    IDENTIFIED_BY_ID,
    created_timestamp,
    global_table,
    org_id,
    same_tenant,
    tenant_key,
    tenant_row_id,
    tenant_table,
    timestamp,
    updated_timestamp,
)
from nectar.shared.database import Base

RUN_STATUSES = ("queued", "running", "waiting", "succeeded", "failed", "cancelled")
CHECKPOINT_STATUSES = ("succeeded", "failed", "waiting")
EVENT_SOURCES = ("api", "resume_url")


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (
        tenant_key("workflows"),
        UniqueConstraint("org_id", "name"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    # The version endpoints and new runs use unless they pin another; NULL until the first save.
    current_version: Mapped[int | None] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"
    __table_args__ = (
        tenant_key("workflow_versions"),
        UniqueConstraint("org_id", "workflow_id", "version"),
        UniqueConstraint("org_id", "workflow_id", "id"),  # the target of a run's one reference
        same_tenant("workflow_id", "workflows"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    workflow_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    definition: Mapped[dict] = mapped_column(JSONB, nullable=False)
    note: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = created_timestamp()


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"
    __table_args__ = (
        tenant_key("workflow_runs"),
        # One reference, to the run's version of its workflow in its organization: that version
        # implies the workflow and the organization (deleting either cascades through it). Each
        # foreign key is a check per run written, and three took half of writing a run.
        ForeignKeyConstraint(
            ["org_id", "workflow_id", "version_id"],
            ["workflow_versions.org_id", "workflow_versions.workflow_id", "workflow_versions.id"],
            ondelete="CASCADE",
        ),
        CheckConstraint(f"status IN {RUN_STATUSES}", name="status"),
        Index("ix_workflow_runs_org_id_queued_at", "org_id", "queued_at"),
        Index("ix_workflow_runs_org_id_workflow_id_queued_at", "org_id", "workflow_id", "queued_at"),
        # Admin's runs per day across every organization (the dashboard's last 30 days).
        Index("ix_workflow_runs_queued_at", "queued_at"),
        # An organization's runs waiting for a worker and those not ended, counted when it queues
        # another (fair queueing, and its limits).
        Index(
            "ix_workflow_runs_org_id_unfinished",
            "org_id",
            "status",
            postgresql_where=text("status IN ('queued', 'running', 'waiting')"),
        ),
        # A trigger delivered twice with the same key runs once.
        Index(
            "uq_workflow_runs_idempotency",
            "org_id",
            "workflow_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # Alert rules count an organization's failures of the last minutes (core/alerts).
        Index("ix_workflow_runs_failed", "org_id", "finished_at", postgresql_where=text("status = 'failed'")),
        # Admin's sweep for runs whose next activation was lost (core/contract/runs.py).
        Index("ix_workflow_runs_waiting_wake_at", "wake_at", postgresql_where=text("status = 'waiting'")),
        Index(
            "ix_workflow_runs_going_queued_at",
            "queued_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)  # see the foreign key
    workflow_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    version_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    trigger: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="queued")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    rerun_of: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    input: Mapped[dict | None] = mapped_column(JSONB)
    output: Mapped[dict | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = created_timestamp()
    started_at: Mapped[datetime | None] = timestamp()
    finished_at: Mapped[datetime | None] = timestamp()
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # Time spent running, over all its activations: what usage counts (a wait of days is not use).
    active_ms: Mapped[int | None] = mapped_column(Integer)
    # Each executed step in order (id, type, position, attempt, status, input, output, error,
    # started_at, finished_at), kept with its run: one row to write per run, and pruning a run
    # prunes its steps.
    steps: Mapped[list] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    # A waiting run: when to activate it again (NULL: only when an event or a person wakes it), and
    # what it waits for ({"type": "wait", "step": ..., "until": ...}).
    wake_at: Mapped[datetime | None] = timestamp()
    waiting_for: Mapped[dict | None] = mapped_column(JSONB)
    # A run started by another run's call_workflow step: that run (its caller, woken when this one
    # ends if it waits for the output), and how deeply calls are nested here (0: not called).
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    call_depth: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # A test run (trigger "test") of a draft from the builder: the document it ran, saved or not
    # (its version is the one the draft was opened from). NULL for every other run.
    definition: Mapped[dict | None] = mapped_column(JSONB)


class WorkflowRunCheckpoint(Base):
    """A durable run's journal: one row per step with an outside effect or a wait, written when
    the step is done (with the step's email, in one transaction) and read when the run resumes."""

    __tablename__ = "workflow_run_checkpoints"
    __table_args__ = (
        same_tenant("run_id", "workflow_runs"),
        CheckConstraint(f"status IN {CHECKPOINT_STATUSES}", name="status"),
        tenant_table(),
    )

    org_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)  # see the foreign key
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(500), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    # json, not jsonb: replays must read an output's keys in the order the step first saw them.
    output: Mapped[dict | list | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    record: Mapped[dict | None] = mapped_column(JSON)  # the step's entry in the run's trace
    saved_at: Mapped[datetime] = created_timestamp()


class WorkflowRunEvent(Base):
    """An event sent to a run (through the API, or a wait_for_event step's resume URL), kept until a
    wait_for_event step of its name takes it: one sent before the run reaches the step is not lost."""

    __tablename__ = "workflow_run_events"
    __table_args__ = (
        tenant_key("workflow_run_events"),
        same_tenant("run_id", "workflow_runs"),
        CheckConstraint(f"source IN {EVENT_SOURCES}", name="source"),
        # What a step looks for: the earliest event of its name that no step has taken.
        Index(
            "ix_workflow_run_events_untaken",
            "org_id",
            "run_id",
            "name",
            "received_at",
            postgresql_where=text("taken_by IS NULL"),
        ),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)  # see the foreign key
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # Through a resume URL: for that step only (its key); through the API: for any step of its name.
    step_key: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[dict | list | str | int | float | bool | None] = mapped_column(JSONB)
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    received_at: Mapped[datetime] = created_timestamp()
    taken_by: Mapped[str | None] = mapped_column(String(500))  # the key of the step that took it
    taken_at: Mapped[datetime | None] = timestamp()


class WorkflowApproval(Base):
    """The decision an approval step waits for: asked when a run reaches the step (one per step key,
    so each loop iteration asks anew), made once by a member with the role, or closed unmade when
    the step's time is up."""

    __tablename__ = "workflow_approvals"
    __table_args__ = (
        tenant_key("workflow_approvals"),
        same_tenant("run_id", "workflow_runs"),
        UniqueConstraint("org_id", "run_id", "step_key"),
        CheckConstraint("decision IN ('approved', 'rejected')", name="decision"),
        CheckConstraint("approver_role IN ('member', 'admin', 'owner')", name="approver_role"),
        Index("ix_workflow_approvals_org_id_requested_at", "org_id", "requested_at"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)  # see the foreign key
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    step_key: Mapped[str] = mapped_column(String(500), nullable=False)
    step_id: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    details: Mapped[str | None] = mapped_column(Text)
    approver_role: Mapped[str] = mapped_column(String(20), nullable=False)
    requested_at: Mapped[datetime] = created_timestamp()
    expires_at: Mapped[datetime] = timestamp(nullable=False)
    closed_at: Mapped[datetime | None] = timestamp()  # the step stopped waiting with no decision
    decision: Mapped[str | None] = mapped_column(String(20))
    decided_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL")
    )
    decided_by_email: Mapped[str | None] = mapped_column(String(320))  # kept if the account goes
    decided_at: Mapped[datetime | None] = timestamp()
    comment: Mapped[str | None] = mapped_column(Text)


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table_args__ = (
        tenant_key("endpoints"),
        UniqueConstraint("org_id", "method", "path"),
        same_tenant("workflow_id", "workflows"),
        CheckConstraint("auth IN ('public', 'api_key')", name="auth"),
        tenant_table(),
    )

    __mapper_args__ = IDENTIFIED_BY_ID

    id: Mapped[uuid.UUID] = tenant_row_id()
    org_id: Mapped[uuid.UUID] = org_id()
    method: Mapped[str] = mapped_column(String(10), nullable=False)
    path: Mapped[str] = mapped_column(String(300), nullable=False)
    workflow_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    # NULL follows the workflow's current version; a number pins that version.
    pinned_version: Mapped[int | None] = mapped_column(Integer)
    auth: Mapped[str] = mapped_column(String(20), nullable=False, server_default="api_key")
    request_schema: Mapped[dict | None] = mapped_column(JSONB)
    description: Mapped[str | None] = mapped_column(Text)
    is_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    created_at: Mapped[datetime] = created_timestamp()
    updated_at: Mapped[datetime] = updated_timestamp()


class WorkflowSchedule(Base):
    __tablename__ = "workflow_schedules"
    # The scheduler's index of cron triggers across organizations: ids and times only, so it is a
    # platform table (no RLS); the runs it starts are created under each organization's scope.
    # No foreign key to its workflow (Citus refuses one from a reference table to a distributed
    # one): the scheduler drops a schedule whose workflow is gone.
    __table_args__ = (
        Index("ix_workflow_schedules_next_run_at", "next_run_at"),
        Index("ix_workflow_schedules_organization_id", "organization_id"),
        global_table(
            "core",
            platform_reason="the scheduler claims due schedules of every organization at once "
            "(SELECT ... FOR UPDATE SKIP LOCKED), which Citus runs only on one shard or a "
            "reference table",
        ),
    )

    workflow_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    cron: Mapped[str] = mapped_column(String(100), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="UTC")
    next_run_at: Mapped[datetime] = timestamp(nullable=False)
    last_run_at: Mapped[datetime | None] = timestamp()
