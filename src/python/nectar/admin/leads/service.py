"""Leads (CRM): the leads marketing stores, searched and filtered across all of them; their
inquiries; the pipeline (new, contacted, qualified, won, lost); staff notes; assignment; CSV export.

Every change records one audit entry in the same transaction as the change.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, Text, cast, func, or_, select
from sqlalchemy.orm import Session

from nectar.admin import audit
from nectar.admin.listing import capped_counts, like_pattern
from nectar.schema.models import Lead, LeadInquiry, LeadNote, StaffUser, Subscription
from nectar.schema.models.marketing import LEAD_STAGES
from nectar.shared.rejection import InputRejected

NOTE_MAX = 5000
BOARD_CARDS = 10
EXPORT_BATCH = 1000
# Spreadsheet programs run a cell starting with these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
EXPORT_COLUMNS = (
    "email",
    "name",
    "company",
    "stage",
    "source",
    "assigned_to",
    "created_at",
    "last_inquiry_at",
)


@dataclass(frozen=True)
class LeadFilters:
    """What the list is narrowed to. Dates are UTC days, both ends included."""

    search: str = ""
    stage: str = ""
    source: str = ""
    created_from: date | None = None
    created_to: date | None = None
    assigned: str = ""  # "", "none", or a staff member's id

    def as_args(self) -> dict[str, str]:
        """The filters as query-string arguments (for pagination links and the export link)."""
        args = {
            "q": self.search,
            "stage": self.stage,
            "source": self.source,
            "created_from": self.created_from.isoformat() if self.created_from else "",
            "created_to": self.created_to.isoformat() if self.created_to else "",
            "assigned": self.assigned,
        }
        return {key: value for key, value in args.items() if value}


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def leads_statement(filters: LeadFilters) -> Select:
    """Leads matching `filters` with their assignee's email, newest first (id breaks ties, so pages
    never repeat or skip a row)."""
    statement = (
        select(Lead, StaffUser.email)
        .outerjoin(StaffUser, StaffUser.id == Lead.assigned_staff_id)
        .order_by(Lead.created_at.desc(), Lead.id.desc())
    )
    if filters.search:
        pattern = like_pattern(filters.search)
        statement = statement.where(
            or_(
                # As text, so a trigram index on (email::text) can serve it (citext's ILIKE cannot).
                cast(Lead.email, Text).ilike(pattern, escape="\\"),
                Lead.name.ilike(pattern, escape="\\"),
                Lead.company.ilike(pattern, escape="\\"),
            )
        )
    if filters.stage:
        statement = statement.where(Lead.status == filters.stage)
    if filters.source:
        statement = statement.where(func.lower(Lead.source) == filters.source.lower())
    if filters.created_from:
        statement = statement.where(Lead.created_at >= _utc_midnight(filters.created_from))
    if filters.created_to:
        statement = statement.where(Lead.created_at < _utc_midnight(filters.created_to + timedelta(days=1)))
    if filters.assigned == "none":
        statement = statement.where(Lead.assigned_staff_id.is_(None))
    elif filters.assigned:
        statement = statement.where(Lead.assigned_staff_id == uuid.UUID(filters.assigned))
    return statement


def stage_counts(session: Session) -> dict[str, int]:
    """Leads per pipeline stage, each counted up to TOTAL_CAP through the (status, created_at) index
    (a GROUP BY over a million leads takes a fifth of a second; this, a few milliseconds)."""
    return capped_counts(session, Lead.status, LEAD_STAGES)


def board(session: Session, per_stage: int = BOARD_CARDS) -> dict[str, list[Lead]]:
    """The newest `per_stage` leads of each stage, for the pipeline board."""
    return {
        stage: list(
            session.scalars(
                select(Lead)
                .where(Lead.status == stage)
                .order_by(Lead.created_at.desc(), Lead.id.desc())
                .limit(per_stage)
            )
        )
        for stage in LEAD_STAGES
    }


@dataclass(frozen=True)
class LeadDetail:
    lead: Lead
    assignee: StaffUser | None
    inquiries: list[LeadInquiry]
    notes: list[tuple[LeadNote, str | None]]
    subscriptions: list[Subscription]


def get_lead(session: Session, lead_id: uuid.UUID, *, for_update: bool = False) -> Lead:
    statement = select(Lead).where(Lead.id == lead_id)
    if for_update:
        statement = statement.with_for_update()
    lead = session.scalars(statement).one_or_none()
    if lead is None:
        raise LookupError(f"no lead {lead_id}")
    return lead


def lead_detail(session: Session, lead_id: uuid.UUID) -> LeadDetail:
    """The lead, every inquiry it made (newest first), the staff notes, and any subscription it
    became (linked by checkout or by the same email address)."""
    lead = get_lead(session, lead_id)
    assignee = session.get(StaffUser, lead.assigned_staff_id) if lead.assigned_staff_id else None
    inquiries = list(
        session.scalars(
            select(LeadInquiry)
            .where(LeadInquiry.lead_id == lead.id)
            .order_by(LeadInquiry.created_at.desc(), LeadInquiry.id)
        )
    )
    notes = list(
        session.execute(
            select(LeadNote, StaffUser.email)
            .outerjoin(StaffUser, StaffUser.id == LeadNote.staff_id)
            .where(LeadNote.lead_id == lead.id)
            .order_by(LeadNote.created_at.desc(), LeadNote.id)
        ).all()
    )
    subscriptions = list(
        session.scalars(
            select(Subscription)
            .where(
                or_(
                    Subscription.lead_id == lead.id,
                    func.lower(Subscription.customer_email) == lead.email.lower(),
                )
            )
            .order_by(Subscription.created_at.desc())
        )
    )
    return LeadDetail(lead, assignee, inquiries, notes, subscriptions)


def assignable_staff(session: Session) -> list[StaffUser]:
    """Active staff who may own a lead (read-only staff cannot act on one)."""
    return list(
        session.scalars(
            select(StaffUser)
            .where(StaffUser.is_active, StaffUser.role != "read_only")
            .order_by(StaffUser.email)
        )
    )


def change_stage(session: Session, lead_id: uuid.UUID, stage: str) -> Lead:
    """Moves the lead to `stage` in the pipeline."""
    if stage not in LEAD_STAGES:
        raise InputRejected(f"Choose one of the stages: {', '.join(LEAD_STAGES)}.")
    lead = get_lead(session, lead_id, for_update=True)
    if lead.status == stage:
        raise InputRejected(f"{lead.email} is already {stage}.")
    before = lead.status
    lead.status = stage
    audit.record("lead.stage", target=f"lead:{lead.id}", before={"stage": before}, after={"stage": stage})
    return lead


def assign(session: Session, lead_id: uuid.UUID, staff_id: uuid.UUID | None) -> Lead:
    """Gives the lead to a staff member, or to nobody with None."""
    lead = get_lead(session, lead_id, for_update=True)
    staff = None
    if staff_id is not None:
        staff = session.get(StaffUser, staff_id)
        if staff is None or not staff.is_active or staff.role == "read_only":
            raise InputRejected("Choose an active staff member who may edit leads.")
    if lead.assigned_staff_id == staff_id:
        raise InputRejected("The lead already has that owner.")
    before = session.get(StaffUser, lead.assigned_staff_id) if lead.assigned_staff_id else None
    lead.assigned_staff_id = staff_id
    audit.record(
        "lead.assign",
        target=f"lead:{lead.id}",
        before={"assigned_to": before.email if before else None},
        after={"assigned_to": staff.email if staff else None},
    )
    return lead


def add_note(session: Session, lead_id: uuid.UUID, staff_id: uuid.UUID, body: str) -> LeadNote:
    body = (body or "").strip()
    if not body:
        raise InputRejected("Write something in the note.")
    if len(body) > NOTE_MAX:
        raise InputRejected(f"A note holds at most {NOTE_MAX:,} characters.")
    lead = get_lead(session, lead_id)
    note = LeadNote(lead_id=lead.id, staff_id=staff_id, body=body)
    session.add(note)
    session.flush()
    audit.record("lead.note", target=f"lead:{lead.id}", after={"note_id": str(note.id), "body": body})
    return note


def safe_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading '."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def export_rows(session: Session, statement: Select) -> Iterator[tuple]:
    """Every lead of `statement` (a `leads_statement`), streamed from a server-side cursor in batches.
    The statement is built by the caller before it records the export, so a filter that cannot be
    turned into SQL fails before anything is recorded, not in the middle of the download."""
    result = session.execute(statement, execution_options={"yield_per": EXPORT_BATCH})
    for lead, assignee in result:
        yield (
            lead.email,
            lead.name,
            lead.company,
            lead.status,
            lead.source,
            assignee,
            lead.created_at,
            lead.last_inquiry_at,
        )


def csv_lines(rows: Iterable[tuple]) -> Iterator[str]:
    """The header, then one CSV line per row, each cell made safe for spreadsheets."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
