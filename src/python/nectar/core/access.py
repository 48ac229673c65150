"""Who is asking, and as which organization: resolved once per request, enforced by decorators.

Every request's database session is scoped to the signed-in user (their memberships become
readable) until an organization is chosen; then to that organization alone, once the user is
checked to be its member. With no organization chosen, tenant tables read as empty: core fails closed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import wraps

from flask import abort, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import select

from nectar.schema.models import Membership, Organization, User
from nectar.shared.database import db, scope_session

ROLE_RANK = {"member": 1, "admin": 2, "owner": 3}
PUBLIC_BLUEPRINTS = {"tenant_endpoints", "service_api", "run_signals"}


class PermissionDenied(Exception):
    """The signed-in user's role does not allow this. The message says why, for people."""


@dataclass(frozen=True)
class OrgContext:
    org: Organization
    role: str

    @property
    def org_id(self) -> uuid.UUID:
        return self.org.id

    def at_least(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def resolve_request_scope() -> None:
    """before_request: scope the database session to the user and their chosen organization."""
    g.org_context = None
    if request.blueprint in PUBLIC_BLUEPRINTS:
        return  # tenant endpoints, the service API and resume URLs carry their own credentials
    if not current_user.is_authenticated:
        scope_session(db.session)
        return
    user_id = current_user.user.id
    scope_session(db.session, user_id=user_id)
    org_id = _chosen_org_id()
    if org_id is None:
        return
    membership = db.session.scalar(
        select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )
    if membership is None:
        session.pop("org_id", None)  # removed from it since: forget the choice
        return
    # The tenant alone from here: with the user scope too, the user's memberships elsewhere would
    # join this organization's rows (policies add up), and counts would be wrong.
    scope_session(db.session, org_id=org_id)
    g.org_context = OrgContext(org=db.session.get(Organization, org_id), role=membership.role)


def _chosen_org_id() -> uuid.UUID | None:
    raw = session.get("org_id")
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        return None


def choose_org(org_id: uuid.UUID) -> None:
    """Opens `org_id` for this browser, and remembers it for the signed-in user's next sign-in
    (kept when the caller commits)."""
    session["org_id"] = str(org_id)
    current_user.user.last_org_id = org_id


def open_org_after_sign_in(user: User) -> str:
    """Where a user lands after signing in: in the organization they used last (if still a member),
    else in their only one; with several and none remembered, on the list; with none, creating one."""
    scope_session(db.session, user_id=user.id)  # the session was anonymous until now
    org_ids = db.session.scalars(select(Membership.org_id).where(Membership.user_id == user.id)).all()
    if user.last_org_id in org_ids:
        chosen = user.last_org_id
    elif len(org_ids) == 1:
        chosen = org_ids[0]
    else:
        return url_for("orgs.choose") if org_ids else url_for("orgs.create")
    choose_org(chosen)
    return url_for("dashboard.home")


def current_org() -> OrgContext:
    context = g.get("org_context")
    if context is None:
        abort(404)
    return context


def org_required(role: str = "member"):
    """The view needs a chosen, active organization in which the user holds at least `role`."""

    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return redirect(url_for("accounts.login", next=request.full_path))
            context = g.get("org_context")
            if context is None:
                flash("Choose or create an organization first.", "info")
                return redirect(url_for("orgs.choose"))
            if context.org.status == "suspended":
                return render_template("core/orgs/suspended.html", org=context.org), 403
            if not context.at_least(role):
                abort(403, f"This needs the {role} role in {context.org.name}; yours is {context.role}.")
            return view(*args, **kwargs)

        return wrapped

    return decorate
