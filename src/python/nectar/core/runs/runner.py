"""Running a stored workflow version for real: live effects, then one statement to record the run
(endpoint calls and tests), or an activation of a durable run from its journal (the worker)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime

from flask import current_app
from sqlalchemy.orm import Session

from nectar.core.integrations.connectors import prepare_call
from nectar.core.integrations.service import authorize, connection_named
from nectar.core.org_mail.service import MailLimitReached, WorkflowMail
from nectar.core.runs.calls import Caller, called_run_result, start_called_run, wake_caller
from nectar.core.runs.inbox import RunInbox
from nectar.core.runs.journal import ClaimedRun, RunJournal, claim_run
from nectar.core.runs.links import run_links
from nectar.core.runs.metrics import count_run
from nectar.core.runs.queries import saved_definition
from nectar.core.runs.queue import activation_job
from nectar.core.runs.records import RunRequest, complete_run, fail_run, outcome_statement, record_run
from nectar.core.variables.service import for_run
from nectar.core.workflows import outbound
from nectar.core.workflows.engine import (
    SYNC_LIMITS,
    Limits,
    RunOutcome,
    RunStopped,
    StepFailed,
    execute,
    mask_forms,
    masked,
    masked_and_cut,
)
from nectar.shared.database import SET_TENANT_SQL, db, in_one_round_trip, is_database_outage, scope_session
from nectar.shared.jobs import OwnJob
from nectar.shared.mail import Email, queue_email

UNSUBSCRIBED = "the recipient unsubscribed from this organization's email"


class LiveEffects:
    """What steps do to the world: guarded HTTP, email through the outbox (checked and counted
    against the organization's plan by WorkflowMail), runs of other workflows called by `caller`,
    real sleeping. The session comes from `session_of`, called the first time a step needs one
    (most endpoint calls never do). Branches of a parallel step may use it from several threads:
    `session_lock` (shared with the run's journal) keeps them to one at a time."""

    def __init__(
        self,
        session_of: Callable[[], Session],
        policy: outbound.OutboundPolicy,
        caller: Caller,
        session_lock: AbstractContextManager = nullcontext(),  # noqa: B008 - stateless, shareable
    ):
        self._session_of, self._session, self.policy = session_of, None, policy
        self.caller, self._session_lock = caller, session_lock
        self.org_id, self._mail = caller.org_id, None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._session_of()
        return self._session

    @property
    def mail(self) -> WorkflowMail:
        if self._mail is None:
            self._mail = WorkflowMail(db.engine, self.org_id)
        return self._mail

    def http(self, step: dict, request: dict) -> dict:
        if "operation" in request:
            call = prepare_call(
                self.session, current_app.config["NECTAR_KEY_RING"], step, request, self._session_lock
            )
            request["method"], request["url"] = call.method, call.url  # recorded with the step
            answer = outbound.send(
                call.method,
                call.url,
                policy=self.policy,
                headers=call.headers,
                params=call.query,
                body=call.body,
                timeout=request["timeout_seconds"],
            ).as_dict()
            return masked(answer, mask_forms(call.credentials))  # recorded: no credential, echoed or not
        url, headers, credentials = request["url"], request["headers"], []
        if step.get("connection"):
            with self._session_lock:
                connection = connection_named(self.session, step["connection"])
            if connection is None:
                raise ValueError(f"no connection named {step['connection']!r} in this organization")
            url, headers, credentials = authorize(
                connection, current_app.config["NECTAR_KEY_RING"], url, headers
            )
        answer = outbound.send(
            request["method"],
            url,
            policy=self.policy,
            headers=headers,
            params=request["query"],
            body=request["body"],
            timeout=request["timeout_seconds"],
        ).as_dict()
        return masked(answer, mask_forms(credentials))

    def email(self, to: str, subject: str, body: str, *, dedupe_key: str | None = None) -> dict:
        """Checks, counts and queues the message. A durable run's step gives a dedupe key: the
        outbox's unique index then holds at most one message per run and step (the step's
        checkpoint commits with it, so a replay never queues it again)."""
        try:
            message = self.mail.message(*(text.replace("\x00", "") for text in (to, subject, body)))
        except MailLimitReached as limit:
            raise StepFailed(str(limit)) from None
        if message is None:
            return {"queued": False, "to": to, "reason": UNSUBSCRIBED}
        self.queue(replace(message, dedupe_key=dedupe_key) if dedupe_key else message)
        return {"queued": True, "to": message.to}

    def queue(self, message: Email) -> None:
        with self._session_lock:
            queue_email(self.session, message)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def start_workflow(self, workflow: str, run_input: dict, *, key: str | None) -> str:
        """Queues the called run in the run's transaction: it commits with the calling step's
        checkpoint (durable runs) or the run's record."""
        if self.caller is None:
            raise RunStopped("this run cannot call workflows")
        with self._session_lock:
            return start_called_run(self.session, self.caller, workflow, run_input, key)

    def workflow_result(self, run_id: str) -> dict | None:
        with self._session_lock:
            return called_run_result(self.session, run_id)


class CollectingEffects(LiveEffects):
    """Live effects whose emails are kept for the caller to write in its own transaction."""

    def __init__(self, session_of: Callable[[], Session], policy: outbound.OutboundPolicy, caller: Caller):
        super().__init__(session_of, policy, caller)
        self.emails: list[Email] = []

    def queue(self, message: Email) -> None:
        self.emails.append(message)

    def start_workflow(self, workflow: str, run_input: dict, *, key: str | None) -> str:
        """An endpoint call's run is written after its answer: the called run is committed at once."""
        run_id = super().start_workflow(workflow, run_input, key=key)
        self.session.commit()
        return run_id


def outbound_policy() -> outbound.OutboundPolicy:
    return current_app.config["NECTAR_OUTBOUND_POLICY"]


def activate_run(
    session: Session,
    org_id: uuid.UUID,
    run_id: uuid.UUID,
    *,
    limits: Limits,
    now: Callable[[], datetime] | None = None,
    job: OwnJob | None = None,
) -> RunOutcome | None:
    """Takes a queued or waiting run as far as it can go now (the worker's part), resuming from its
    journal: a run whose worker died goes on where its journal ends, repeating no effect it had
    recorded. Its outcome (finished, or waiting until `wake_at`) is written and committed with its
    next activation. None when there was nothing to do. A workflow's own failures end as a failed
    run; the database's raise, and the job is retried. A run cancelled meanwhile stops before its
    next step that acts or waits, and ends cancelled whatever it reached. A called run that ends
    wakes its caller if the caller waits for it. The worker's `job` (this activation's) ends with
    the outcome when it is written in one round trip."""
    scope_session(session, org_id=org_id)
    claimed = claim_run(session.get_bind(), org_id, run_id)
    if claimed is None:
        return None  # already finished, or removed
    run, checkpoints = claimed
    session_lock = threading.RLock()  # parallel branches share the session (engine.py)
    organization = None
    try:
        definition = run.definition or saved_definition(session, org_id, run.version_id)
        # Read at each activation: a variable changed meanwhile is read as it is now.
        organization = for_run(session, current_app.config["NECTAR_KEY_RING"], definition)
        outcome = execute(
            definition,
            run.input or {},
            LiveEffects(
                lambda: session,
                outbound_policy(),
                Caller(org_id, run_id, run.call_depth, run.trigger),
                session_lock,
            ),
            limits=limits,
            mode="async",
            journal=RunJournal(session, org_id, run_id, checkpoints, session_lock),
            now=now or (lambda: datetime.now(UTC)),
            inbox=RunInbox(session, run, run_links(), session_lock),
            tenant=org_id,
            organization=organization,
        )
        return _settle(session, org_id, run, outcome, job)
    except Exception as error:  # noqa: BLE001 - a run must end recorded, whatever broke
        if is_database_outage(error):
            raise  # the database went away: the job is retried and the run resumes from its journal
        _fail(session, org_id, run, error, organization.masks if organization is not None else ())
        return None


def _settle(
    session: Session, org_id: uuid.UUID, run: ClaimedRun, outcome: RunOutcome, job: OwnJob | None
) -> RunOutcome:
    """Writes and commits the activation's outcome with what follows it: the run's own wake-up
    when it waits until a time; its caller's activation when it was called and has ended."""
    wake_up = [activation_job(org_id, run.id, outcome.wake_at)] if outcome.wake_at else []
    if run.parent_run_id is None:
        # The usual case, in one round trip (the worker's hot path), after whatever the steps
        # left open (usually nothing: each step that writes commits with its checkpoint), and
        # with the end of the worker's job.
        session.commit()
        statements = [(SET_TENANT_SQL, (str(org_id),)), outcome_statement(run.id, outcome), *wake_up]
        if job is not None:
            statements.append(job.end_statement)
        results = in_one_round_trip(session.get_bind(), statements)
        if job is not None:
            job.ended()
        status, error = results[1][0]
    else:
        status, error = complete_run(session, run.id, outcome)
        for statement in wake_up:
            session.connection().exec_driver_sql(*statement)
        if status != "waiting":
            wake_caller(session, org_id, run.id)
        session.commit()
    if status != outcome.status:  # cancelled meanwhile: the cancellation stands
        outcome = replace(outcome, status=status, error=error, wake_at=None, waiting_for=None)
    count_run(run.trigger, outcome.status)
    return outcome


def _fail(
    session: Session, org_id: uuid.UUID, run: ClaimedRun, error: Exception, masks: tuple[str, ...]
) -> None:
    run_id, called = run.id, run.parent_run_id is not None
    session.rollback()
    scope_session(session, org_id=org_id)
    # The error may quote what the run was doing (a URL it rendered): its secrets are masked first.
    why = f"the run could not be completed: {type(error).__name__}: {error}"
    fail_run(session, run_id, masked_and_cut(why, masks, 2000))
    if called:
        wake_caller(session, org_id, run_id)
    session.commit()
    count_run(run.trigger, "failed")


def run_version(
    session: Session,
    org_id: uuid.UUID,
    request: RunRequest,
    definition: dict,
    *,
    limits: Limits = SYNC_LIMITS,
    mode: str = "sync",
    policy: outbound.OutboundPolicy | None = None,
    rate_bucket: tuple[str, int] | None = None,
    deadline: float | None = None,
) -> tuple[uuid.UUID, RunOutcome]:
    """Runs `definition` now and records the run in the session's transaction (uncommitted), with
    whatever its steps queued (emails, called runs)."""
    run_id = uuid.uuid4()
    organization = for_run(session, current_app.config["NECTAR_KEY_RING"], definition)
    outcome = execute(
        definition,
        request.input,
        LiveEffects(lambda: session, policy or outbound_policy(), Caller(org_id, run_id)),
        limits=limits,
        mode=mode,
        deadline=deadline,
        tenant=org_id,
        organization=organization,
    )
    if organization is not None and organization.masks:  # the trigger is recorded too
        request = replace(request, input=masked(request.input, organization.masks))
    return record_run(session, org_id, request, outcome, rate_bucket, run_id), outcome
