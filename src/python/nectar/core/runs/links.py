"""Signed, expiring links into a durable run, for people and systems without an API key: a
wait_for_event step's resume URL, and the links in an approval's email.

Each names its organization, run and step key, and says until when it holds; the app's secret key
signs it, so a link cannot be forged or moved to another run or step. A link is made again on every
replay of its run, and comes out the same (no signing time inside).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app

from nectar.shared.tokens import make_expiring_token, read_expiring_token

RESUME_PATH = "/resume/"  # + token: POST an event there
APPROVAL_PATH = "/approvals/"  # + token: a page to confirm a decision on
# A resume URL can be handed out before its step is reached, so it cannot end with the step's wait;
# it holds for two of the longest waits after its run was queued, and the server refuses it as soon
# as its step has stopped waiting.
RESUME_URL_LIFETIME = timedelta(days=60)


@dataclass(frozen=True)
class Target:
    """Where a link points: a step of a run."""

    org_id: uuid.UUID
    run_id: uuid.UUID
    step_key: str
    event: str | None = None  # a resume URL: the event it sends
    approval_id: uuid.UUID | None = None  # an approval link: the approval


@dataclass(frozen=True)
class RunLinks:
    secret_key: str
    public_url: str

    def resume_url(self, target: Target, expires_at: datetime) -> str:
        return self._url(RESUME_PATH, "run.resume", target, expires_at, event=target.event)

    def read_resume_token(self, token: str) -> Target:
        """The step a resume URL's token names; TokenExpired or TokenInvalid (forged, altered)."""
        data = read_expiring_token(self.secret_key, "run.resume", token)
        return Target(uuid.UUID(data["org"]), uuid.UUID(data["run"]), data["key"], event=data["event"])

    def approval_url(self, target: Target, expires_at: datetime) -> str:
        return self._url(APPROVAL_PATH, "run.approval", target, expires_at, approval=str(target.approval_id))

    def read_approval_token(self, token: str) -> Target:
        """The approval an email's link names; TokenExpired or TokenInvalid (forged, altered)."""
        data = read_expiring_token(self.secret_key, "run.approval", token)
        approval_id = uuid.UUID(data["approval"])
        return Target(uuid.UUID(data["org"]), uuid.UUID(data["run"]), data["key"], approval_id=approval_id)

    def _url(self, path: str, purpose: str, target: Target, expires_at: datetime, **extra: str | None) -> str:
        payload = {"org": str(target.org_id), "run": str(target.run_id), "key": target.step_key, **extra}
        return self.public_url + path + make_expiring_token(self.secret_key, purpose, payload, expires_at)


def run_links() -> RunLinks:
    """The links of this app (its secret key and public address)."""
    return RunLinks(current_app.secret_key, current_app.config["NECTAR_SETTINGS"].public_url)
