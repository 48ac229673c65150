"""The JSON API under /api/v1: session or API-key authentication, pagination, RFC 9457 errors."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from flask import Blueprint, current_app, g, jsonify, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from nectar.core.access import OrgContext, PermissionDenied
from nectar.core.api import models as m
from nectar.core.api.declare import operation
from nectar.core.api.openapi import api_document
from nectar.core.api_keys import service as api_keys
from nectar.core.api_keys.service import Scope
from nectar.core.dashboard import org_counts
from nectar.core.extensions import csrf
from nectar.core.org_mail.service import MailLimitReached
from nectar.core.orgs import service as orgs
from nectar.core.plans import FeatureNotIncluded
from nectar.core.runs.queue import QueueFull, QuotaReached
from nectar.core.usage import checked_period, daily_usage, month_so_far
from nectar.schema.models import ApiKey, Invitation, Membership, Organization, User
from nectar.shared.bad_input import JsonObject
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected
from nectar.shared.web import external_url, limit_reached, problem, problem_later

api = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(api)  # bearer requests carry no cookie; session requests are checked in _authenticate
MAX_PER_PAGE = 100
MAX_PAGE = 100_000
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@api.errorhandler(PermissionDenied)
def _denied(error):
    return problem(403, str(error))


@api.errorhandler(FeatureNotIncluded)
def _not_included(error: FeatureNotIncluded):
    return problem(403, str(error), **error.as_problem_fields())


@api.errorhandler(LookupError)
def _missing(_error):
    return problem(404, "No such resource in this organization.")


@api.errorhandler(MailLimitReached)
def _mail_limited(error: MailLimitReached):
    if error.limit is None:
        return problem_later(429, str(error), error.retry_after)
    return limit_reached(str(error), error.limit, error.resets_at)


@api.errorhandler(QueueFull)
def _queue_full(error: QueueFull):
    if isinstance(error, QuotaReached):
        return limit_reached(str(error), error.limit, error.resets_at)
    return problem_later(429, str(error), error.retry_after)


def needs(scope: Scope):
    """Marks an API view as needing `scope` of an API key; unmarked, a GET needs `read` and
    anything else `workflows:write` (see `required_scope`)."""

    def mark(view):
        view.api_scope = scope
        return view

    return mark


def required_scope(view, method: str) -> Scope:
    """The scope an API key needs for `method` on `view` (shown per operation in the OpenAPI document)."""
    default = Scope.READ if method in ("GET", "HEAD") else Scope.WORKFLOWS_WRITE
    return getattr(view, "api_scope", default)


@api.before_request
def _authenticate():
    if request.endpoint in ("api.openapi", "api.docs"):
        return None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        try:
            principal = api_keys.authenticate(db.session, header.removeprefix("Bearer ").strip())
        except FeatureNotIncluded as lacking:
            detail = f"{lacking} This key works again once the organization is on one of those plans."
            return problem(403, detail, **lacking.as_problem_fields())
        if principal is None:
            return _unauthorized(
                "The API key is unknown, revoked or expired, or its organization is suspended."
            )
        view = current_app.view_functions.get(request.endpoint)
        needed = required_scope(view, request.method) if view is not None else Scope.READ
        if not api_keys.allows(principal.scopes, needed):
            detail = (
                f"This API key lacks the scope “{needed}”, which {request.method} {request.path} needs "
                f"(the key holds: {', '.join(principal.scopes)})."
            )
            return problem(403, detail, required_scope=str(needed))
        g.api_principal = principal
        g.org_context = OrgContext(org=db.session.get(Organization, principal.org_id), role=principal.role)
        return None
    if not current_user.is_authenticated:
        return _unauthorized("Send an API key as `Authorization: Bearer nsk_...`, or sign in.")
    if request.method in UNSAFE:
        csrf.protect()  # a browser session must prove the request came from our own pages
    context = g.get("org_context")
    if context is None:
        return problem(409, "Choose an organization first (POST /orgs/<id>/switch in the web app).")
    if context.org.status != "active":
        return problem(
            403, f"{context.org.name} is suspended: {context.org.suspended_reason or 'contact support'}."
        )
    return None


def _unauthorized(detail: str):
    response = problem(401, detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="nectar"'
    return response


def _ctx() -> OrgContext:
    return g.org_context


def _user_id() -> uuid.UUID | None:
    return None if g.get("api_principal") else current_user.user.id


def _accountable_user_id() -> uuid.UUID | None:
    """The person a request acts for: the signed-in user, or whoever made the API key."""
    principal = g.get("api_principal")
    if principal is None:
        return current_user.user.id
    key = db.session.get(ApiKey, principal.key_id)
    return key.created_by if key else None


def _page() -> tuple[int, int]:
    try:
        page = int(request.args.get("page", 1))
        per_page = int(request.args.get("per_page", 50))
    except ValueError:
        raise InputRejected("page and per_page must be whole numbers.", field="page", status=400) from None
    if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= MAX_PER_PAGE:
        raise InputRejected(
            f"page is 1 to {MAX_PAGE}; per_page is 1 to {MAX_PER_PAGE}.", field="page", status=400
        )
    return page, per_page


def _paginated(statement, render):
    """One page of `statement`, without counting the whole table: fetch one extra row to know if
    there is a next page."""
    page, per_page = _page()
    rows = list(db.session.execute(statement.limit(per_page + 1).offset((page - 1) * per_page)))
    has_next = len(rows) > per_page
    items = [render(*row) for row in rows[:per_page]]
    body = {"items": items, "page": page, "per_page": per_page}
    body["next"] = url_for(request.endpoint, page=page + 1, per_page=per_page) if has_next else None
    return jsonify(body)


def _body() -> JsonObject:
    """The request's JSON object (already parsed and checked at the edge: nectar.shared.bad_input);
    views read its fields with their kind and limits checked (`text`, `whole_number`)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InputRejected("Send a JSON object with Content-Type: application/json.", status=400)
    return JsonObject(data)


def _iso(value):
    return value.isoformat() if value else None


@api.get("/openapi.json")
@operation("This API's OpenAPI document", responses={200: m.Document}, public=True)
def openapi():
    return jsonify(api_document(current_app))


@api.get("/docs")
@operation("This API's interactive documentation (an HTML page)", responses={200: None}, public=True)
def docs():
    return render_template("core/api/docs.html")


@api.get("/organization")
@operation("The organization", responses={200: m.Organization})
def organization():
    org = _ctx().org
    return jsonify(
        id=str(org.id), name=org.name, slug=org.slug, timezone=org.timezone, plan=org.plan, status=org.status
    )


@api.get("/dashboard")
@operation("Counts of what the organization has", responses={200: m.Counts})
def dashboard():
    return jsonify(org_counts(db.session).as_dict())


@api.get("/usage")
@operation("Usage per UTC day", query=m.UsagePeriod, responses={200: m.UsageReport})
def usage():
    """The organization's usage per UTC day, ?from= and ?to= (YYYY-MM-DD; this month so far by default)."""
    first, last = month_so_far(datetime.now(UTC).date())
    try:
        if "from" in request.args:
            first = date.fromisoformat(request.args["from"])
        if "to" in request.args:
            last = date.fromisoformat(request.args["to"])
    except ValueError:
        raise InputRejected("'from' and 'to' are dates: YYYY-MM-DD.", field="from", status=400) from None
    try:
        first, last = checked_period(first, last)
    except ValueError as refused:
        raise InputRejected(str(refused), field="from", status=400) from None
    days, total = daily_usage(db.session, first, last)
    return jsonify(
        {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "days": [{"day": day.isoformat(), **used.as_dict()} for day, used in days.items()],
            "total": total.as_dict(),
        }
    )


@api.get("/members")
@operation("Members, a page at a time", query=m.Paging, responses={200: m.MemberPage})
@needs(Scope.ADMIN)
def members():
    statement = (
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .order_by(Membership.created_at, Membership.user_id)
    )
    return _paginated(
        statement,
        lambda m, u: {
            "user_id": str(u.id),
            "email": u.email,
            "display_name": u.display_name,
            "role": m.role,
            "joined_at": _iso(m.created_at),
        },
    )


@api.delete("/members/<uuid:user_id>")
@operation("Remove a member", responses={204: None})
@needs(Scope.ADMIN)
def remove_member(user_id: uuid.UUID):
    orgs.remove_member(db.session, _ctx(), _user_id(), user_id)
    db.session.commit()
    return "", 204


def _key_json(key: ApiKey) -> dict:
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "expires_at": _iso(key.expires_at),
        "created_at": _iso(key.created_at),
        "last_used_at": _iso(key.last_used_at),
        "revoked_at": _iso(key.revoked_at),
    }


@api.get("/api-keys")
@operation("API keys, a page at a time", query=m.Paging, responses={200: m.ApiKeyPage})
@needs(Scope.ADMIN)
def list_api_keys():
    return _paginated(select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id), _key_json)


@api.post("/api-keys")
@operation(
    "Create an API key",
    body=m.NewApiKey,
    responses={201: m.CreatedApiKey},
    example={"name": "deploy bot", "scopes": ["workflows:write"], "expires_at": None},
    links={
        201: {
            "RevokeApiKey": {"operationId": "revoke_api_key", "parameters": {"key_id": "$response.body#/id"}}
        }
    },
)
@needs(Scope.ADMIN)
def create_api_key():
    body = _body()
    name = body.get("name")
    if not isinstance(name, str):
        raise InputRejected(
            f"name is required: a string of 1 to {api_keys.NAME_MAX} characters.", path="/name"
        )
    scopes = _checked("scopes", api_keys.checked_scopes, body.get("scopes", [Scope.READ.value]))
    expires_at = _checked("expires_at", _expiry, body.get("expires_at"))
    key, token = _checked(
        "name", api_keys.create_key, db.session, _ctx(), _accountable_user_id(), name, scopes, expires_at
    )
    db.session.commit()
    return jsonify({**_key_json(key), "token": token}), 201


def _expiry(value) -> datetime | None:
    if value is None:
        return None
    try:
        expires_at = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError("expires_at is a date and time with its zone (ISO 8601), or null.") from None
    return api_keys.checked_expiry(expires_at, datetime.now(UTC))


def _checked(field: str, check, *args):
    """check(*args), or a 422 naming `field` with the ValueError check raised."""
    try:
        return check(*args)
    except ValueError as error:
        raise InputRejected(str(error), path=f"/{field}") from None


@api.delete("/api-keys/<uuid:key_id>")
@operation("Revoke an API key", responses={204: None})
@needs(Scope.ADMIN)
def revoke_api_key(key_id: uuid.UUID):
    api_keys.revoke_key(db.session, _ctx(), key_id)
    db.session.commit()
    return "", 204


def _invitation_json(invitation: Invitation) -> dict:
    return {
        "id": str(invitation.id),
        "email": invitation.email,
        "role": invitation.role,
        "expires_at": _iso(invitation.expires_at),
        "accepted_at": _iso(invitation.accepted_at),
    }


@api.get("/invitations")
@operation("Open invitations, a page at a time", query=m.Paging, responses={200: m.InvitationPage})
@needs(Scope.ADMIN)
def list_invitations():
    if not _ctx().at_least("admin"):
        raise PermissionDenied("Only an admin or owner can see invitations.")
    return _paginated(
        select(Invitation).order_by(Invitation.created_at.desc(), Invitation.id), _invitation_json
    )


@api.post("/invitations")
@operation(
    "Invite someone by email",
    body=m.NewInvitation,
    responses={200: m.Invitation, 201: m.Invitation},
    example={"email": "ada@example.com", "role": "member"},
    links={
        201: {
            "RevokeInvitation": {
                "operationId": "revoke_invitation",
                "parameters": {"invitation_id": "$response.body#/id"},
            }
        }
    },
)
@needs(Scope.ADMIN)
def create_invitation():
    body = _body()
    email, role = body.get("email"), body.get("role", "member")
    if not isinstance(email, str) or not isinstance(role, str):
        raise InputRejected("email (string) is required; role is owner, admin or member.", path="/email")
    invitation, sent = orgs.invite(
        db.session,
        _ctx(),
        _accountable_user_id(),
        email,
        role,
        lambda t: external_url("orgs.accept_invitation", token=t),
    )
    db.session.commit()
    return jsonify(_invitation_json(invitation)), 201 if sent else 200


@api.delete("/invitations/<uuid:invitation_id>")
@operation("Revoke an invitation", responses={204: None})
@needs(Scope.ADMIN)
def revoke_invitation(invitation_id: uuid.UUID):
    orgs.revoke_invitation(db.session, _ctx(), invitation_id)
    db.session.commit()
    return "", 204
