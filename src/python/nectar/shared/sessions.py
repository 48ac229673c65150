"""Server-side sessions: one table row per signed-in browser, named by the browser's signed cookie.
Signing out revokes the row, so a copied cookie is worth nothing afterwards. One mechanism for every
service with accounts (core's customers, admin's staff), each with its own tables and time limits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class SessionStore:
    """Sessions in the mapped class `table` (`id`, the owner column, `address`, `user_agent`,
    `created_at`, `last_seen_at`, `revoked_at`), owned by accounts of the mapped class `account`
    (`id`, `is_active`) through the column named `owner`."""

    table: type
    account: type
    owner: str  # the column of `table` naming the account, e.g. "user_id"
    idle_limit: timedelta
    last_seen_resolution: timedelta  # how stale last_seen_at may get: it is written at most this often
    absolute_limit: timedelta | None = None

    def start(self, session: Session, account, address: str | None, user_agent: str | None, **columns):
        """A new session row for `account` (flushed, not committed); `columns` sets any others."""
        row = self.table(
            id=uuid.uuid4(),
            address=address,
            user_agent=(user_agent or "")[:300],
            **{self.owner: account.id},
            **columns,
        )
        session.add(row)
        session.flush()
        return row

    def load(self, session: Session, session_id: str | None):
        """The live session and its account, `(row, account)`, or None when the id is unknown or
        malformed, the session was revoked, idle or is too old, or the account is inactive."""
        try:
            sid = uuid.UUID(str(session_id))
        except ValueError:
            return None
        found = session.execute(
            select(self.table, self.account)
            .join(self.account, self.account.id == getattr(self.table, self.owner))
            .where(self.table.id == sid, self.table.revoked_at.is_(None), self.account.is_active.is_(True))
        ).first()
        if found is None:
            return None
        row, account = found
        now = datetime.now(UTC)
        if now - row.last_seen_at > self.idle_limit:
            return None
        if self.absolute_limit is not None and now - row.created_at > self.absolute_limit:
            return None
        if now - row.last_seen_at > self.last_seen_resolution:
            row.last_seen_at = now
            session.commit()  # at most once per resolution, so the idle limit sees activity
        return row, account

    def end(self, session: Session, session_id: uuid.UUID) -> None:
        """Revokes one session (signing out)."""
        session.execute(
            update(self.table)
            .where(self.table.id == session_id, self.table.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )

    def end_all(self, session: Session, account_id: uuid.UUID) -> None:
        """Revokes every session of an account (a new password, a changed email, a deactivation)."""
        session.execute(
            update(self.table)
            .where(getattr(self.table, self.owner) == account_id, self.table.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
