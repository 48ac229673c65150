"""The audit log page: every staff write, searchable by actor, action, target and date; read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from flask import Blueprint, render_template, request
from sqlalchemy import Select, select
from werkzeug.datastructures import MultiDict

from nectar.admin.listing import (
    EARLIEST_DAY,
    LATEST_DAY,
    like_pattern,
    paginate,
    read_date,
    read_page,
    read_text,
)
from nectar.schema.models import AuditEntry

audit_log = Blueprint("audit_log", __name__, url_prefix="/audit")


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""
    target: str = ""
    since: date | None = None
    until: date | None = None

    @property
    def any(self) -> bool:
        return bool(self.actor or self.action or self.target or self.since or self.until)


def read_filters(args: MultiDict) -> AuditFilters:
    return AuditFilters(
        actor=read_text(args, "actor", 320),
        action=read_text(args, "action", 100),
        target=read_text(args, "target", 200),
        since=read_date(args, "since"),
        until=read_date(args, "until"),
    )


def statement_for(filters: AuditFilters) -> Select:
    statement = select(AuditEntry)
    if filters.actor:
        statement = statement.where(AuditEntry.actor.ilike(like_pattern(filters.actor)))
    if filters.action:
        # "user." finds every user action; a full name finds that one.
        statement = statement.where(AuditEntry.action.ilike(like_pattern(filters.action).removeprefix("%")))
    if filters.target:
        statement = statement.where(AuditEntry.target.ilike(like_pattern(filters.target)))
    # Days are UTC days; read_date keeps them far enough from date.max for the "+ 1 day" below.
    if filters.since:
        statement = statement.where(AuditEntry.created_at >= datetime.combine(filters.since, time.min, UTC))
    if filters.until:  # the whole "until" day is included
        statement = statement.where(
            AuditEntry.created_at < datetime.combine(filters.until + timedelta(days=1), time.min, UTC)
        )
    return statement.order_by(AuditEntry.id.desc())


@audit_log.get("")
def index():
    filters = read_filters(request.args)
    page = paginate(statement_for(filters), read_page(request.args))
    return render_template(
        "admin/audit/index.html",
        page=page,
        filters=filters,
        earliest_day=EARLIEST_DAY.isoformat(),
        latest_day=LATEST_DAY.isoformat(),
    )
