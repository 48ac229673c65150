"""Organizations seen by staff: lists and details read directly across tenants; suspending and
reactivating go through core's contract (core then refuses the organization's sign-ins to its
pages, its API and its endpoints) and are audited. Plan overrides (a limit raised or a feature
granted for one organization) are written on the organization here, audited too."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, func, or_, select
from werkzeug.datastructures import MultiDict

from nectar.admin import audit
from nectar.admin.core_link import core_client
from nectar.admin.listing import Sort, like_pattern, read_choice, read_sort, read_text
from nectar.admin.staff.access import current_staff
from nectar.core.contract import PLANS, OrganizationPlan
from nectar.core.contract.plans import FEATURE_NAMES, LIMIT_NAMES, Feature, entitlements, plan_of
from nectar.schema.models import Membership, Organization, Subscription, User, Workflow
from nectar.shared.rejection import InputRejected

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

    @property
    def entitlements(self):
        """What the organization may do now: its plan with staff's overrides."""
        return entitlements(self.org.plan, self.org.plan_overrides)


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


MAX_LIMIT = 10**9


def grant_override(org: Organization, name: str, raw_value: str | None, reason: str) -> dict:
    """Raises one of the organization's plan limits, or grants it a feature, and audits it (who,
    when, what, why). Core honours it at once (the organization's change notifies its caches).
    Raises InputRejected for an unknown name, a limit that is not above the plan's, or a
    feature the plan includes already."""
    plan = plan_of(org.plan)
    if name in LIMIT_NAMES:
        try:
            value = int((raw_value or "").strip().replace(",", "").replace("_", ""))
        except ValueError:
            raise InputRejected("Give the new limit as a whole number.") from None
        current = getattr(plan.limits, name)
        if not current < value <= MAX_LIMIT:
            raise InputRejected(
                f"An override raises the limit: above the {plan.name} plan's {current:,} and at most {MAX_LIMIT:,}."
            )
    elif name in FEATURE_NAMES:
        if plan.offers(Feature(name)):
            raise InputRejected(f"The {plan.name} plan includes {Feature(name).title} already.")
        value = True
    else:
        raise InputRejected("Choose a limit or a feature from the list.")
    staff = current_staff()
    entry = {
        "value": value,
        "reason": reason,
        "granted_by": staff.email,
        "granted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    before = (org.plan_overrides or {}).get(name)
    org.plan_overrides = {**(org.plan_overrides or {}), name: entry}  # a new dict: the ORM sees the change
    audit.record(
        "organization.plan_override_granted",
        f"organization:{org.id}",
        _override(name, before),
        _override(name, entry),
    )
    return entry


def remove_override(org: Organization, name: str) -> None:
    """Takes an override back (audited); the plan's own limit or feature applies again."""
    overrides = dict(org.plan_overrides or {})
    before = overrides.pop(name, None)
    if before is None:
        raise InputRejected("This organization has no such override.")
    org.plan_overrides = overrides
    audit.record(
        "organization.plan_override_removed", f"organization:{org.id}", _override(name, before), None
    )


def _override(name: str, entry: dict | None) -> dict | None:
    return None if entry is None else {"override": name, **entry}
