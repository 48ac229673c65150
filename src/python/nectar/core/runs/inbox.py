"""A durable run's Inbox (engine.py) in PostgreSQL: the events sent to it (workflow_run_events),
the decisions on its approval steps (workflow_approvals), and whether it was cancelled.

Everything it writes joins the run's session transaction, which the step's checkpoint commits
(journal.py): an event is taken, or an approval asked for and its emails queued, exactly when the
step's checkpoint says so, whatever crashes in between.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from nectar.core.access import ROLE_RANK
from nectar.core.org_mail.service import MailLimitReached, charge
from nectar.core.runs.journal import ClaimedRun, show_running
from nectar.core.runs.links import RESUME_URL_LIFETIME, RunLinks, Target
from nectar.schema.models import Membership, Organization, User, Workflow, WorkflowRun
from nectar.shared.mail import Email, queue_email_once

MAX_APPROVAL_EMAILS = 20  # the first members with the role, by seniority

_TAKE_EVENT_SQL = text(
    "UPDATE workflow_run_events SET taken_by = :key, taken_at = now() WHERE id = ("
    " SELECT id FROM workflow_run_events WHERE run_id = :run AND name = :name AND taken_by IS NULL"
    " AND (step_key IS NULL OR step_key = :key) AND received_at <= :until"
    " ORDER BY received_at, id LIMIT 1 FOR UPDATE"
    ") RETURNING id, received_at, payload"
)
_ASK_SQL = text(
    "INSERT INTO workflow_approvals (org_id, run_id, step_key, step_id, title, details, approver_role, expires_at) "
    "VALUES (:org, :run, :key, :step, :title, :details, :role, :until) "
    "ON CONFLICT (org_id, run_id, step_key) DO NOTHING RETURNING id"
)
# Once the step's time is up no decision can be made: a decision that came first is taken, and
# one that comes after finds the approval closed (signals.decide locks the same row).
_CLOSE_SQL = text(
    "UPDATE workflow_approvals SET closed_at = now() "
    "WHERE run_id = :run AND step_key = :key AND decision IS NULL AND closed_at IS NULL"
)
_DECISION_SQL = text(
    "SELECT decision, decided_by_email, decided_at, comment FROM workflow_approvals "
    "WHERE run_id = :run AND step_key = :key"
)


class RunInbox:
    """The inbox of `run`, on a session scoped to its organization. The session's other users (the
    run's journal and effects, in parallel branches) share `session_lock`."""

    def __init__(
        self,
        session: Session,
        run: ClaimedRun,
        links: RunLinks,
        session_lock: AbstractContextManager = nullcontext(),  # noqa: B008 - stateless, shareable
    ):
        self.session, self.run, self.links, self._session_lock = session, run, links, session_lock
        self._shown_running = False

    def take_event(self, key: str, name: str, until: datetime) -> dict | None:
        with self._session_lock:
            row = self.session.execute(
                _TAKE_EVENT_SQL, {"run": self.run.id, "name": name, "key": key, "until": until}
            ).one_or_none()
            if row is None:
                return None
            return {"id": str(row.id), "received_at": row.received_at.isoformat(), "payload": row.payload}

    def request_approval(self, key: str, request: dict) -> str | None:
        with self._session_lock:
            approval_id = self.session.scalar(
                _ASK_SQL,
                {
                    "org": self.run.org_id,
                    "run": self.run.id,
                    "key": key,
                    "step": request["step"],
                    "title": request["title"],
                    "details": request["details"] or None,
                    "role": request["approver_role"],
                    "until": request["until"],
                },
            )
            if approval_id is not None and request["notify"]:
                return self._email_approvers(key, approval_id, request)
            return None

    def _email_approvers(self, key: str, approval_id: uuid.UUID, request: dict) -> str | None:
        """Emails the approvers, each message charged to the organization's mail quota; past it,
        the rest are not emailed (the approval waits in the app all the same): says so."""
        org = self.session.get(Organization, self.run.org_id)
        workflow = self.session.get(Workflow, self.run.workflow_id)
        link = self.links.approval_url(
            Target(self.run.org_id, self.run.id, key, approval_id=approval_id), request["until"]
        )
        roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[request["approver_role"]]]
        approvers = self.session.execute(
            select(User.id, User.email)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.org_id == self.run.org_id, Membership.role.in_(roles), User.is_active.is_(True))
            .order_by(Membership.created_at, User.id)
            .limit(MAX_APPROVAL_EMAILS)
        ).all()
        body = "\n".join(
            [
                f'A run of the workflow "{workflow.name}" in {org.name} waits for a decision:',
                "",
                request["title"],
                *(["", request["details"]] if request["details"] else []),
                "",
                f"Approve: {link}?decision=approved",
                f"Reject:  {link}?decision=rejected",
                "",
                "Each link opens a page where you confirm your decision after signing in; it needs the "
                f"{request['approver_role']} role or above in {org.name}. The run stops waiting at "
                f"{request['until']:%Y-%m-%d %H:%M} UTC.",
            ]
        )
        for notified, (user_id, email) in enumerate(approvers):
            try:
                with self.session.begin_nested():  # past the quota: the charge is undone
                    charge(self.session, org.id, org.plan)
            except MailLimitReached as limited:
                return f"{notified} of {len(approvers)} approvers emailed: {limited}"
            queue_email_once(
                self.session,
                Email(
                    to=email,
                    subject=f"Approval needed in {org.name}: {request['title']}"[:300],
                    body_text=body,
                    category="workflow.approval",
                    dedupe_key=f"approval:{uuid.uuid5(self.run.id, key)}:{user_id}",
                ),
            )

    def decision(self, key: str, closing: bool) -> dict | None:
        with self._session_lock:
            params = {"run": self.run.id, "key": key}
            if closing:
                self.session.execute(_CLOSE_SQL, params)
            row = self.session.execute(_DECISION_SQL, params).one_or_none()
            if row is None or row.decision is None:
                return None
            return {
                "decision": row.decision,
                "by": row.decided_by_email,
                "at": row.decided_at.isoformat(),
                "comment": row.comment or "",
            }

    def resume_url(self, key: str, event: str) -> str:
        target = Target(self.run.org_id, self.run.id, key, event=event)
        return self.links.resume_url(target, self.run.queued_at + RESUME_URL_LIFETIME)

    def cancelled(self) -> bool:
        """Asked first, it also shows the run running (journal.show_running): it is about to take
        time, or has taken some."""
        with self._session_lock:
            if not self._shown_running:
                self._shown_running = True
                return show_running(self.session.get_bind(), self.run.org_id, self.run.id) == "cancelled"
            status = self.session.scalar(select(WorkflowRun.status).where(WorkflowRun.id == self.run.id))
            return status == "cancelled"
