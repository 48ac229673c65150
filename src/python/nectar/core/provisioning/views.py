"""Core's service API (/internal/v1): what marketing and admin may ask of core. Each caller has its
own credential: CORE_SERVICE_TOKEN (marketing) may only provision accounts and read or set plans;
CORE_ADMIN_TOKEN (admin) may make every call. The client is nectar.core.contract."""

from __future__ import annotations

import hmac
import uuid

from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nectar.core.accounts import service as accounts
from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.openapi import internal_document
from nectar.core.contract.client import API_PREFIX, PLANS
from nectar.core.extensions import csrf
from nectar.core.orgs import service as orgs
from nectar.schema.models import Membership, Organization, User
from nectar.shared.database import db, scope_session
from nectar.shared.rejection import InputRejected
from nectar.shared.web import external_url, problem, rejection_response

service_api = Blueprint("service_api", __name__, url_prefix=API_PREFIX)
csrf.exempt(service_api)
# Organizations made for a request_id get an id derived from it, so a retry finds the first one.
REQUEST_NAMESPACE = uuid.UUID("5b0f9c38-6d7e-4c1a-9a55-2f0e8f7f6d11")
# The same for users made by staff (admin): a retried or double-submitted create finds the first.
USER_REQUEST_NAMESPACE = uuid.UUID("0f3a8d5e-2b71-4c9e-8d0a-6c1e5b7f9a24")


# What marketing's credential (CORE_SERVICE_TOKEN) may call; everything else needs admin's.
MARKETING_ENDPOINTS = frozenset({"service_api.create_account", "service_api.plan", "service_api.set_plan"})


def _matches(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


@service_api.get("/openapi.json")
@operation("This contract's OpenAPI document", responses={200: m.Document}, public=True)
def openapi():
    return jsonify(internal_document(current_app))


@service_api.before_request
def _authenticate():
    if request.endpoint == "service_api.openapi":
        return None  # the contract's shape is no secret; every call in it needs a credential
    settings = current_app.config["NECTAR_SETTINGS"]
    if not settings.service_token and not settings.admin_service_token:
        return problem(
            503, "The service API is off: neither CORE_SERVICE_TOKEN nor CORE_ADMIN_TOKEN is set on core."
        )
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if given and _matches(given, settings.admin_service_token):
        return None
    if given and _matches(given, settings.service_token):
        if request.endpoint in MARKETING_ENDPOINTS:
            return None
        return problem(
            403,
            "This credential (CORE_SERVICE_TOKEN) may only provision accounts and read or set plans; "
            "customer accounts and suspensions need admin's credential (CORE_ADMIN_TOKEN).",
        )
    response = problem(401, "A valid service credential is required.")
    response.headers["WWW-Authenticate"] = 'Bearer realm="nectar-services"'
    return response


def _body() -> dict:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _plan_json(org: Organization):
    return jsonify(organization_id=str(org.id), plan=org.plan, status=org.status)


def _organization(org_id: uuid.UUID) -> Organization | None:
    scope_session(db.session, org_id=org_id)
    return db.session.get(Organization, org_id)


@service_api.post("/accounts")
@operation(
    "Provision an account and organization (marketing, after checkout)",
    body=m.NewAccount,
    responses={200: m.ProvisionedAccount, 201: m.ProvisionedAccount},
)
def create_account():
    body = _body()
    request_id = body.get("request_id")
    plan = body.get("plan") or "free"
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 255:
        raise InputRejected(
            "request_id is required, at most 255 characters (it makes retries safe).", path="/request_id"
        )
    if plan not in PLANS:
        raise InputRejected(f"plan must be one of {', '.join(PLANS)}.", path="/plan")
    display_name = _display_name(body)
    email = accounts.normalize_email(str(body.get("email") or ""))
    org_id = uuid.uuid5(REQUEST_NAMESPACE, request_id)
    if _organization(org_id) is not None:  # a retry: answer with what the first call made
        owner = db.session.scalar(select(Membership.user_id).where(Membership.role == "owner").limit(1))
        return jsonify(
            user_id=str(owner), organization_id=str(org_id), created_user=False, created_organization=False
        )
    user = accounts.find_user(db.session, email)
    created_user = user is None
    if created_user:
        user = User(id=uuid.uuid4(), email=email, display_name=display_name or None)
        db.session.add(user)
        db.session.flush()
    # An account nobody proved they own must not receive a paid organization: whoever registered
    # the address first loses that account's password and sessions; the address's owner sets one.
    claim = created_user or user.email_verified_at is None
    if claim and not created_user:
        user.password_hash = None
        accounts.end_all_sessions(db.session, user.id)
    try:
        org = orgs.create_organization(
            db.session,
            user.id,
            str(body.get("organization_name") or ""),
            plan=plan,
            external_ref=request_id,
            org_id=org_id,
        )
    except InputRejected as error:
        db.session.rollback()
        raise InputRejected(error.detail, path="/organization_name") from None
    except IntegrityError:
        db.session.rollback()  # a concurrent retry made it first
        return problem(409, "This request_id is being provisioned already; retry.")
    if claim:
        accounts.send_set_password(
            db.session, user, lambda t: external_url("accounts.reset_password", token=t)
        )
    db.session.commit()
    return (
        jsonify(
            user_id=str(user.id),
            organization_id=str(org.id),
            created_user=created_user,
            created_organization=True,
        ),
        201,
    )


@service_api.post("/organizations/<uuid:org_id>/suspend")
@operation("Suspend an organization", body=m.Suspension, responses={200: m.OrganizationPlan})
def suspend(org_id: uuid.UUID):
    org = _organization_or_404(org_id)
    reason = str(_body().get("reason") or "").strip()[:500]
    if not reason:
        raise InputRejected("A reason is required; the organization's members will see it.", path="/reason")
    org.status, org.suspended_reason = "suspended", reason
    db.session.commit()
    return _plan_json(org)


@service_api.post("/organizations/<uuid:org_id>/reactivate")
@operation("Reactivate an organization", responses={200: m.OrganizationPlan})
def reactivate(org_id: uuid.UUID):
    org = _organization_or_404(org_id)
    org.status, org.suspended_reason = "active", None
    db.session.commit()
    return _plan_json(org)


@service_api.get("/organizations/<uuid:org_id>/plan")
@operation("An organization's plan", responses={200: m.OrganizationPlan})
def plan(org_id: uuid.UUID):
    return _plan_json(_organization_or_404(org_id))


@service_api.put("/organizations/<uuid:org_id>/plan")
@operation("Set an organization's plan", body=m.PlanChange, responses={200: m.OrganizationPlan})
def set_plan(org_id: uuid.UUID):
    org = _organization_or_404(org_id)
    new_plan = _body().get("plan")
    if new_plan not in PLANS:
        raise InputRejected(f"plan must be one of {', '.join(PLANS)}.", path="/plan")
    org.plan = new_plan
    db.session.commit()
    return _plan_json(org)


# --- Customer accounts, for staff (admin). Core's own account rules apply to every change. ---------


def _user_json(user: User, status: int = 200, created: bool = False):
    body = jsonify(
        user_id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        is_active=user.is_active,
        email_verified=user.email_verified_at is not None,
        created=created,
    )
    return body, status


def _display_name(body: dict) -> str | None:
    """The display name from a request body (None when absent or blank)."""
    name = body.get("display_name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise InputRejected("display_name must be a string of at most 200 characters.", path="/display_name")
    return (name.strip() or None) if isinstance(name, str) else None


def _email_taken(email: str, user_id: uuid.UUID | None = None):
    other = accounts.find_user(db.session, email)
    if other is not None and other.id != user_id:
        return rejection_response(
            InputRejected("An account with this email already exists.", path="/email", status=409)
        )
    return None


@service_api.post("/users")
@operation(
    "Create a customer account (no password: they choose one from an email)",
    body=m.NewUser,
    responses={200: m.CustomerUser, 201: m.CustomerUser},
)
def create_user():
    body = _body()
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 255:
        raise InputRejected(
            "request_id is required, at most 255 characters (it makes retries safe).", path="/request_id"
        )
    display_name = _display_name(body)
    email = accounts.normalize_email(str(body.get("email") or ""))
    user_id = uuid.uuid5(USER_REQUEST_NAMESPACE, request_id)
    existing = db.session.get(User, user_id)
    if existing is not None:  # a retry: answer with what the first call made
        return _user_json(existing)
    if taken := _email_taken(email):
        return taken
    user = User(id=user_id, email=email, display_name=display_name)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()  # the same address, created concurrently
        return _email_taken(email) or problem(409, "This request is being handled already; retry.")
    # No password yet: the person chooses one from this email, which also proves the address.
    accounts.send_set_password(db.session, user, lambda t: external_url("accounts.reset_password", token=t))
    db.session.commit()
    return _user_json(user, 201, created=True)


def _user_or_404(user_id: uuid.UUID) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        abort(problem(404, "No such user."))
    return user


def _organization_or_404(org_id: uuid.UUID) -> Organization:
    org = _organization(org_id)
    if org is None:
        abort(problem(404, "No such organization."))
    return org


@service_api.patch("/users/<uuid:user_id>")
@operation("Change a customer's email or name", body=m.UserChange, responses={200: m.CustomerUser})
def update_user(user_id: uuid.UUID):
    user = _user_or_404(user_id)
    body = _body()
    if "display_name" in body:
        user.display_name = _display_name(body)
    if "email" in body:
        email = accounts.normalize_email(str(body.get("email") or ""))
        if email != user.email:
            if taken := _email_taken(email, user.id):
                return taken
            user.email, user.email_verified_at = email, None
            try:
                db.session.flush()
            except IntegrityError:
                db.session.rollback()
                return _email_taken(email, user_id) or problem(409, "The email changed meanwhile; retry.")
            # Whoever was signed in under the old address signs in again (reset links sent there
            # died with the change: they are bound to the address).
            accounts.end_all_sessions(db.session, user.id)
            # The new address must be proved, as at sign-up.
            accounts.send_verification(
                db.session, user, lambda t: external_url("accounts.verify_email", token=t)
            )
    db.session.commit()
    return _user_json(user)


@service_api.post("/users/<uuid:user_id>/deactivate")
@operation("Deactivate a customer account", responses={200: m.CustomerUser})
def deactivate_user(user_id: uuid.UUID):
    user = _user_or_404(user_id)
    user.is_active = False
    accounts.end_all_sessions(db.session, user.id)
    db.session.commit()
    return _user_json(user)


@service_api.post("/users/<uuid:user_id>/reactivate")
@operation("Reactivate a customer account", responses={200: m.CustomerUser})
def reactivate_user(user_id: uuid.UUID):
    user = _user_or_404(user_id)
    user.is_active = True
    db.session.commit()
    return _user_json(user)


@service_api.post("/users/<uuid:user_id>/password-reset")
@operation("Email a customer a password reset link", responses={202: m.Queued})
def send_password_reset(user_id: uuid.UUID):
    user = _user_or_404(user_id)
    if not user.is_active:
        return problem(409, "This account is deactivated; reactivate it before sending a reset link.")
    accounts.request_password_reset(
        db.session, user.email, lambda t: external_url("accounts.reset_password", token=t)
    )
    db.session.commit()
    return jsonify(queued=True), 202
