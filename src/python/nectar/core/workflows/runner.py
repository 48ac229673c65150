"""Running a stored workflow version for real: live effects, then one statement to record the run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from flask import current_app
from sqlalchemy.orm import Session

from nectar.core.org_mail.service import MailLimitReached, WorkflowMail
from nectar.core.workflows import outbound
from nectar.core.workflows.engine import SYNC_LIMITS, Limits, RunOutcome, StepFailed, execute
from nectar.core.workflows.service import RunRequest, complete_run, record_run
from nectar.shared.database import db
from nectar.shared.mail import Email, queue_email

UNSUBSCRIBED = "the recipient unsubscribed from this organization's email"


class LiveEffects:
    """What steps do to the world: guarded HTTP, email through the outbox (checked and counted
    against the organization's plan by WorkflowMail), real sleeping. The session comes from
    `session_of`, called the first time a step needs one (most endpoint calls never do)."""

    def __init__(self, session_of: Callable[[], Session], policy: outbound.OutboundPolicy, org_id: uuid.UUID):
        self._session_of, self._session, self.policy = session_of, None, policy
        self.org_id, self._mail = org_id, None

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
        url, headers = request["url"], request["headers"]
        if step.get("connection"):
            from nectar.core.integrations.service import authorize, connection_named

            connection = connection_named(self.session, step["connection"])
            if connection is None:
                raise ValueError(f"no connection named {step['connection']!r} in this organization")
            url, headers = authorize(connection, current_app.config["NECTAR_KEY_RING"], url, headers)
        return outbound.send(
            request["method"],
            url,
            policy=self.policy,
            headers=headers,
            params=request["query"],
            body=request["body"],
            timeout=request["timeout_seconds"],
        ).as_dict()

    def email(self, to: str, subject: str, body: str) -> dict:
        try:
            message = self.mail.message(*(text.replace("\x00", "") for text in (to, subject, body)))
        except MailLimitReached as limit:
            raise StepFailed(str(limit)) from None
        if message is None:
            return {"queued": False, "to": to, "reason": UNSUBSCRIBED}
        self.queue(message)
        return {"queued": True, "to": message.to}

    def queue(self, message: Email) -> None:
        queue_email(self.session, message)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class CollectingEffects(LiveEffects):
    """Live effects whose emails are kept for the caller to write in its own transaction."""

    def __init__(self, session_of: Callable[[], Session], policy: outbound.OutboundPolicy, org_id: uuid.UUID):
        super().__init__(session_of, policy, org_id)
        self.emails: list[Email] = []

    def queue(self, message: Email) -> None:
        self.emails.append(message)


def outbound_policy() -> outbound.OutboundPolicy:
    return current_app.config["NECTAR_OUTBOUND_POLICY"]


def run_queued(session: Session, org_id: uuid.UUID, run_id: uuid.UUID, *, limits: Limits) -> None:
    """Executes a queued run (the worker's part): marks it running, runs it, completes it. A run
    found already `running` belonged to a worker that died mid-way: it is failed, not repeated,
    since its steps may have had effects. Nothing here raises for a workflow's own failures."""
    from sqlalchemy import select, update

    from nectar.schema.models import WorkflowRun, WorkflowVersion
    from nectar.shared.database import scope_session

    scope_session(session, org_id=org_id)
    run = session.scalar(select(WorkflowRun).where(WorkflowRun.id == run_id).with_for_update())
    if run is None or run.status not in ("queued", "running"):
        return  # already finished, or removed
    if run.status == "running":
        run.status, run.error = (
            "failed",
            "the worker stopped while running it; start it again if that is safe",
        )
        return
    run.status = "running"
    session.commit()
    definition = session.get(WorkflowVersion, run.version_id).definition
    try:
        outcome = execute(
            definition,
            run.input or {},
            LiveEffects(lambda: session, outbound_policy(), org_id),
            limits=limits,
            mode="async",
        )
        complete_run(session, run_id, outcome)
    except Exception as error:  # noqa: BLE001 - a run must end recorded, whatever broke
        session.rollback()
        scope_session(session, org_id=org_id)
        session.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id == run_id)
            .values(
                status="failed",
                error=f"the run could not be completed: {type(error).__name__}: {error}"[:2000],
            )
        )


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
    outcome = execute(
        definition,
        request.input,
        LiveEffects(lambda: session, policy or outbound_policy(), org_id),
        limits=limits,
        mode=mode,
        deadline=deadline,
    )
    return record_run(session, org_id, request, outcome, rate_bucket), outcome
