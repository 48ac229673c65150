"""Organizations seen by staff: lists and details read directly across tenants; suspending and
reactivating go through core's contract (core then refuses the organization's sign-ins to its
pages, its API and its endpoints) and are audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from werkzeug.datastructures import MultiDict

from nectar.admin import audit
from nectar.admin.core_link import core_client
from nectar.admin.listing import Sort, like_pattern, read_choice, read_sort, read_text
from nectar.core.contract import PLANS, OrganizationPlan
from nectar.schema.models import Membership, Organization, Subscription, User, Workflow

SORTS = {"created": Organization.created_at, "name": Organization.name, "plan": Organization.plan}
DEFAULT_SORT = "-created"
STATUSES = ("active", "suspended")


@dataclass(frozen=True)
class OrgFilters:
    q: str = ""
    status: str = ""
    plan: str = ""

    @property
    def any(self) -> bool:
        return bool(self.q or self.status or self.plan)


def read_filters(args: MultiDict) -> OrgFilters:
    return OrgFilters(
        q=read_text(args, "q"),
        status=read_choice(args, "status", STATUSES),
        plan=read_choice(args, "plan", PLANS),
    )


def sort_of(args: MultiDict) -> Sort:
    return read_sort(args, SORTS, DEFAULT_SORT)


def list_statement(filters: OrgFilters, sort: Sort) -> Select:
    statement = select(Organization)
    if filters.q:
        pattern = like_pattern(filters.q)
        statement = statement.where(or_(Organization.name.ilike(pattern), Organization.slug.ilike(pattern)))
    if filters.status:
        statement = statement.where(Organization.status == filters.status)
    if filters.plan:
        statement = statement.where(Organization.plan == filters.plan)
    return statement.order_by(sort.clause, Organization.id)


def member_counts(session, org_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not org_ids:
        return {}
    rows = session.execute(
        select(Membership.org_id, func.count())
        .where(Membership.org_id.in_(org_ids))
        .group_by(Membership.org_id)
    )
    return {key: count for key, count in rows}


# The detail page shows the first members; the users list (filtered by organization) pages the rest.
MEMBERS_SHOWN = 50


@dataclass(frozen=True)
class OrgDetail:
    org: Organization
    members: list[tuple[Membership, User]]
    member_count: int
    subscriptions: list[Subscription]
    workflows: int


def detail(session, org_id: uuid.UUID) -> OrgDetail | None:
    org = session.get(Organization, org_id)
    if org is None:
        return None
    members = list(
        session.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.org_id == org_id)
            .order_by(Membership.role, User.email)
            .limit(MEMBERS_SHOWN)
        ).all()
    )
    member_count = session.scalar(
        select(func.count()).select_from(Membership).where(Membership.org_id == org_id)
    )
    subscriptions = list(
        session.scalars(
            select(Subscription)
            .where(Subscription.organization_id == org_id)
            .order_by(Subscription.created_at.desc())
        )
    )
    workflows = (
        session.scalar(select(func.count()).select_from(Workflow).where(Workflow.org_id == org_id)) or 0
    )
    return OrgDetail(org, members, member_count or 0, subscriptions, workflows)


def _snapshot(org: Organization) -> dict:
    return {"status": org.status, "suspended_reason": org.suspended_reason, "plan": org.plan}


def _after(plan: OrganizationPlan, reason: str | None) -> dict:
    return {"status": plan.status, "suspended_reason": reason, "plan": plan.plan}


def suspend(org: Organization, reason: str) -> OrganizationPlan:
    before = _snapshot(org)
    plan = core_client().suspend_organization(org.id, reason)
    audit.record("organization.suspended", f"organization:{org.id}", before, _after(plan, reason))
    return plan


def reactivate(org: Organization) -> OrganizationPlan:
    before = _snapshot(org)
    plan = core_client().reactivate_organization(org.id)
    audit.record("organization.reactivated", f"organization:{org.id}", before, _after(plan, None))
    return plan
