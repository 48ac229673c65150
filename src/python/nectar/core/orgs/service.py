"""Organizations: create, choose, settings, members and roles, invitations, ownership.

Every function acting inside an organization takes its `OrgContext` (the caller's membership)
and checks the caller's role here, on the server, whatever the page offered.
"""

from __future__ import annotations

import re
import time
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.core.access import ROLE_RANK, OrgContext, PermissionDenied
from nectar.core.accounts.service import normalize_email
from nectar.core.org_mail.service import (
    MailLimitReached,
    charge,
    is_suppressed,
    organization_headers,
    unsubscribe_url,
)
from nectar.schema.models import ApiKey, Invitation, Membership, Organization, User
from nectar.shared import throttle
from nectar.shared.database import scope_session, tenant_scope, user_scope
from nectar.shared.mail import Email, queue_email, quoted
from nectar.shared.rejection import InputRejected
from nectar.shared.tokens import TokenInvalid, fingerprint, make_token, read_token

INVITATION_DAYS = 7
SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Invitations carry a name the organization chose to people who never asked for mail: besides the
# plan's mail quota, a few an hour per organization, and a few a day to one address (an invitation
# still pending is never sent again: inviting again returns it).
INVITATIONS_PER_ORG = throttle.Limit(events=20, window_seconds=3600)
INVITATIONS_PER_ADDRESS = throttle.Limit(events=3, window_seconds=86_400)


class EmailNotConfirmed(PermissionDenied):
    """Only a person whose own email address is confirmed may have us email others for the
    organization."""


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    return slug or "org"


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not 2 <= len(name) <= 200:
        raise InputRejected("Use 2 to 200 characters.", field="name")
    return name


def create_organization(
    session: Session,
    owner_id: uuid.UUID,
    name: str,
    *,
    slug: str | None = None,
    plan: str = "free",
    external_ref: str | None = None,
    org_id: uuid.UUID | None = None,
) -> Organization:
    """Creates the organization with `owner_id` as its owner; adds a number to a taken slug."""
    name = _check_name(name)
    base = slugify(slug or name)
    if slug is not None and not SLUG_PATTERN.fullmatch(slug):
        raise InputRejected("Use lowercase letters, digits and dashes.", field="slug")
    org_id = org_id or uuid.uuid4()
    with tenant_scope(session, org_id):
        for attempt in range(20):
            candidate = base if attempt == 0 else f"{base[:58]}-{attempt + 1}"
            try:
                with session.begin_nested():
                    org = Organization(
                        id=org_id, name=name, slug=candidate, plan=plan, external_ref=external_ref
                    )
                    session.add(org)
                    session.flush()
                break
            except IntegrityError as error:
                if getattr(error.orig.diag, "constraint_name", None) != "uq_organizations_slug":
                    raise  # the id or external_ref is taken: a concurrent provisioning retry
                if slug is not None:
                    raise InputRejected("That address is taken; choose another.", field="slug") from None
        else:
            raise InputRejected("Could not find a free address for this name; choose one.", field="slug")
        session.add(Membership(org_id=org_id, user_id=owner_id, role="owner"))
        session.flush()
    return org


def my_organizations(session: Session, user_id: uuid.UUID) -> list[tuple[Organization, str]]:
    """The user's organizations and their role in each (readable under the user's own scope)."""
    with user_scope(session, user_id):
        rows = session.execute(
            select(Organization, Membership.role)
            .join(Membership, Membership.org_id == Organization.id)
            .where(Membership.user_id == user_id)
            .order_by(Organization.name)
        )
        return [(org, role) for org, role in rows]


def membership_of(session: Session, user_id: uuid.UUID, org_id: uuid.UUID) -> Membership | None:
    with user_scope(session, user_id):
        return session.scalar(
            select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
        )


def update_settings(session: Session, ctx: OrgContext, name: str, slug: str, timezone: str) -> Organization:
    _require(ctx, "admin", "change the organization's settings")
    org = ctx.org
    org.name = _check_name(name)
    if not SLUG_PATTERN.fullmatch(slug or ""):
        raise InputRejected("Use lowercase letters, digits and dashes (at most 63).", field="slug")
    if timezone not in zoneinfo.available_timezones():
        raise InputRejected(
            "Choose a time zone from the list, such as Europe/Berlin or UTC.", field="timezone"
        )
    org.slug, org.timezone = slug, timezone
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise InputRejected("That address is taken; choose another.", field="slug") from None
    return org


def members(session: Session, ctx: OrgContext) -> list[tuple[Membership, User]]:
    return list(
        session.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.org_id == ctx.org_id)
            .order_by(Membership.created_at)
        )
    )


def pending_invitations(session: Session, ctx: OrgContext) -> list[Invitation]:
    return list(
        session.scalars(
            select(Invitation)
            .where(
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > func.now(),
            )
            .order_by(Invitation.created_at.desc())
        )
    )


def _require(ctx: OrgContext, role: str, doing: str) -> None:
    if ROLE_RANK[ctx.role] < ROLE_RANK[role]:
        raise PermissionDenied(f"Only an {role} or above can {doing}; your role is {ctx.role}.")


def _membership(session: Session, ctx: OrgContext, user_id: uuid.UUID) -> Membership:
    membership = session.get(Membership, (ctx.org_id, user_id))
    if membership is None:
        raise LookupError("no such member")
    return membership


def _owner_count(session: Session) -> int:
    """The organization's owners, their rows locked to the end of the transaction: two owners who
    step down or leave at once are counted one after the other, so one of them stays owner."""
    owners = session.scalars(select(Membership.user_id).where(Membership.role == "owner").with_for_update())
    return len(owners.all())


def invite(
    session: Session, ctx: OrgContext, inviter_id: uuid.UUID | None, email: str, role: str, accept_link
) -> tuple[Invitation, bool]:
    """Invites `email` with `role` and emails them the link: (the invitation, True). A pending
    invitation to the address is returned as it is, with no new email: (it, False). The inviter (for
    an API key, the person who made it) must have confirmed their own address (EmailNotConfirmed);
    MailLimitReached past the organization's invitation throttles or its plan's mail quota, whose
    counts the caller's rollback undoes."""
    from flask import current_app

    _require(ctx, "admin", "invite people")
    if role not in ROLE_RANK:
        raise InputRejected("Choose owner, admin or member.", field="role")
    if role == "owner":
        _require(ctx, "owner", "invite an owner")
    email = normalize_email(email)
    inviter = _confirmed_inviter(session, inviter_id)
    existing_user = session.scalar(select(User.id).where(User.email == email))
    if existing_user is not None and session.get(Membership, (ctx.org_id, existing_user)) is not None:
        raise InputRejected(f"{email} is already a member of {ctx.org.name}.", field="email")
    # Two invitations to one address at once: the second waits, then finds the first pending.
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"invitation:{ctx.org_id}:{email.lower()}"},
    )
    pending = session.scalar(
        select(Invitation).where(
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > func.now(),
        )
    )
    if pending is not None:
        return pending, False
    if is_suppressed(session, email):
        raise InputRejected(
            f"{email} asked to get no email from {ctx.org.name}; they cannot be invited.", field="email"
        )
    _count_invitation(session, ctx.org_id, email)
    charge(session, ctx.org_id, ctx.org.plan)
    invitation = Invitation(
        id=uuid.uuid4(),
        org_id=ctx.org_id,
        email=email,
        role=role,
        invited_by=inviter.id,
        expires_at=datetime.now(UTC) + timedelta(days=INVITATION_DAYS),
    )
    session.add(invitation)
    session.flush()
    token = make_token(
        current_app.secret_key, "invitation", {"inv": str(invitation.id), "org": str(ctx.org_id)}
    )
    queue_email(session, _invitation_email(ctx.org, inviter, email, role, accept_link(token)))
    return invitation, True


def _confirmed_inviter(session: Session, inviter_id: uuid.UUID | None) -> User:
    inviter = session.get(User, inviter_id) if inviter_id else None
    if inviter is None:
        raise EmailNotConfirmed(
            "Invitations are sent in a person's name: this API key's creator is no longer known. "
            "Make a new key, or invite from the Members page."
        )
    if inviter.email_verified_at is None:
        raise EmailNotConfirmed(
            f"Confirm the email address {inviter.email} first: invitations go out in the name of a "
            "person whose address is confirmed (for an API key, whoever made it). Use the link we "
            "emailed, or ask for a new one."
        )
    return inviter


def _count_invitation(session: Session, org_id: uuid.UUID, email: str) -> None:
    for key, limit, message in (
        (f"core.invite:{org_id}", INVITATIONS_PER_ORG, f"{INVITATIONS_PER_ORG.events} invitations an hour"),
        (
            f"core.invite:{org_id}:{fingerprint(email.lower())}",
            INVITATIONS_PER_ADDRESS,
            f"{INVITATIONS_PER_ADDRESS.events} invitations a day to one address",
        ),
    ):
        if throttle.hit(session, key, limit) > limit.events:
            raise MailLimitReached(
                f"An organization may send {message}; try again later.",
                limit.seconds_left(time.time()),
                limit.events,
            )


def _invitation_email(org: Organization, inviter: User, to: str, role: str, link: str) -> Email:
    """Names the organization and the inviter as what they are, text they chose, in quotes and after
    our own words; Nectar Studio says it did not write them."""
    org_name = quoted(org.name, 80)
    who = f"{quoted(inviter.display_name, 80)} ({inviter.email})" if inviter.display_name else inviter.email
    unsubscribe = unsubscribe_url(org.id, to)
    return Email(
        to=to,
        subject=f"Nectar Studio: an invitation to join {quoted(org.name, 60)}",
        body_text=(
            f"{who} invited you to join the organization {org_name} on Nectar Studio, as {role}.\n"
            "The names in quotation marks were chosen by the people who use Nectar Studio; Nectar "
            "Studio did not write them.\n\n"
            f"Accept within {INVITATION_DAYS} days:\n\n{link}\n\n"
            "If you do not know this person or organization, ignore this message: nothing happens "
            "unless you accept.\n\n"
            f"--\nTo get no more email from {org_name} through Nectar Studio, open:\n{unsubscribe}\n"
        ),
        category="org.invitation",
        headers=organization_headers(org.name, unsubscribe),
    )


def revoke_invitation(session: Session, ctx: OrgContext, invitation_id: uuid.UUID) -> None:
    _require(ctx, "admin", "revoke invitations")
    invitation = session.get(Invitation, invitation_id)
    if invitation is None or invitation.org_id != ctx.org_id:
        raise LookupError("no such invitation")
    invitation.revoked_at = datetime.now(UTC)


def invitation_from_token(session: Session, secret_key: str, token: str) -> tuple[Invitation, Organization]:
    """The pending invitation a link names. Leaves the session scoped to its organization, which
    the accept step needs; the caller's request ends with it."""
    data = read_token(secret_key, "invitation", token, INVITATION_DAYS * 24 * 3600)
    org_id = uuid.UUID(data["org"])
    scope_session(session, org_id=org_id)
    invitation = session.get(Invitation, uuid.UUID(data["inv"]))
    if invitation is None or invitation.revoked_at is not None:
        raise TokenInvalid("This invitation was withdrawn.")
    if invitation.accepted_at is not None:
        raise TokenInvalid("This invitation was already accepted. Sign in to use the organization.")
    if invitation.expires_at < datetime.now(UTC):
        raise TokenInvalid("This invitation has expired. Ask for a new one.")
    return invitation, session.get(Organization, org_id)


def accept_invitation(session: Session, invitation: Invitation, user: User) -> Membership:
    if user.email.lower() != invitation.email.lower():
        raise InputRejected(f"This invitation is for {invitation.email}; you are signed in as {user.email}.")
    membership = session.get(Membership, (invitation.org_id, user.id))
    if membership is None:
        membership = Membership(org_id=invitation.org_id, user_id=user.id, role=invitation.role)
        session.add(membership)
    invitation.accepted_at = datetime.now(UTC)
    session.flush()
    return membership


def change_role(session: Session, ctx: OrgContext, user_id: uuid.UUID, role: str) -> Membership:
    _require(ctx, "admin", "change roles")
    if role not in ROLE_RANK:
        raise InputRejected("Choose owner, admin or member.", field="role")
    membership = _membership(session, ctx, user_id)
    if "owner" in (role, membership.role):
        _require(ctx, "owner", "make or unmake owners")
    if membership.role == "owner" and role != "owner" and _owner_count(session) == 1:
        raise InputRejected("An organization needs an owner: make someone else owner first.")
    if ROLE_RANK[role] < ROLE_RANK["admin"] <= ROLE_RANK[membership.role]:
        _revoke_left_behind(session, user_id)
    membership.role = role
    return membership


def _revoke_left_behind(session: Session, user_id: uuid.UUID) -> None:
    """Keys and invitations a person made as admin stop working when they stop being one."""
    now = datetime.now(UTC)
    session.execute(
        update(ApiKey).where(ApiKey.created_by == user_id, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
    )
    session.execute(
        update(Invitation)
        .where(
            Invitation.invited_by == user_id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )


def remove_member(
    session: Session, ctx: OrgContext, acting_user: uuid.UUID | None, user_id: uuid.UUID
) -> None:
    membership = _membership(session, ctx, user_id)
    if user_id != acting_user:
        _require(ctx, "admin", "remove members")
        if membership.role == "owner" and ctx.role != "owner":
            raise PermissionDenied("An admin cannot remove an owner.")
    if membership.role == "owner" and _owner_count(session) == 1:
        raise InputRejected("The last owner cannot leave: transfer ownership first.")
    _revoke_left_behind(session, user_id)
    session.delete(membership)
    session.flush()


def transfer_ownership(session: Session, ctx: OrgContext, acting_user: uuid.UUID, user_id: uuid.UUID) -> None:
    _require(ctx, "owner", "transfer ownership")
    if user_id == acting_user:
        raise InputRejected("You already own this organization.")
    target = _membership(session, ctx, user_id)
    target.role = "owner"
    session.flush()
    _membership(session, ctx, acting_user).role = "admin"
