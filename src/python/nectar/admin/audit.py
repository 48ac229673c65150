"""The audit log: one append-only row per staff write (who, what, before, after, when, from where).

`record` adds the row to the request's database session, so it commits (or rolls back) with the
change it describes: callers commit. The table grants nectar_admin only SELECT and INSERT.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from flask import request
from sqlalchemy.orm import Session

from nectar.schema.models import AuditEntry
from nectar.shared.database import db


def record(
    action: str, target: str | None = None, before: dict | None = None, after: dict | None = None
) -> None:
    """Adds one audit row for the signed-in staff member's write, from the request's address."""
    from nectar.admin.staff.access import current_staff

    staff = current_staff()
    record_by(
        db.session,
        actor=staff.email,
        actor_id=staff.id,
        address=request.remote_addr,
        action=action,
        target=target,
        before=before,
        after=after,
    )


def record_by(
    session: Session,
    *,
    actor: str,
    action: str,
    actor_id: uuid.UUID | None = None,
    address: str | None = None,
    target: str | None = None,
    before: dict | None = None,
    after: dict | None = None,
) -> None:
    """The same row for writes made outside a staff request (the command line: actor names it)."""
    session.add(
        AuditEntry(
            actor=actor[:320],
            actor_id=actor_id,
            action=action[:100],
            target=target[:200] if target else None,
            before=json_safe(before) if before is not None else None,
            after=json_safe(after) if after is not None else None,
            address=address,
        )
    )


def json_safe(value: Any) -> Any:
    """Values as JSON can hold them: ids, times and decimals become strings."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(item) for item in value]
    if isinstance(value, uuid.UUID | datetime | date | Decimal):
        return str(value) if not isinstance(value, datetime | date) else value.isoformat()
    if isinstance(value, bytes):
        return "<bytes>"
    return value
