"""Who is asking: one gate before every admin request, and what views and templates ask of it.

The admin cookie is signed with its own salt and holds only the id of a server-side staff_sessions
row, so a core cookie (same SECRET_KEY, other salt) or a revoked, idle or expired session is worth
nothing. Roles are enforced here, on the server: read_only staff cannot make any unsafe request.
"""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from flask import abort, g, redirect, request, session
from flask.sessions import SecureCookieSessionInterface

from nectar.admin.staff import service
from nectar.schema.models import StaffUser
from nectar.shared.database import db
from nectar.shared.web import problem, wants_json

SESSION_KEY = "staff_session"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Reachable without a session: health checks, stylesheets and icons; signing in and out.
PUBLIC_ENDPOINTS = {"health.healthz", "health.readyz", "static", "shared_ui.static", "shared_ui.favicon"}
SIGN_IN_ENDPOINTS = {"staff.login", "staff.logout"}
# Reachable with a password but no second factor yet: checking a code, or enrolling one.
SECOND_FACTOR_ENDPOINTS = {"staff.totp_verify", "staff.totp_setup", "staff.logout"}
# Writes a read_only member may still make: only to their own sign-in.
READ_ONLY_WRITES = {"staff.logout", "staff.totp_setup", "staff.totp_disable"}


class StaffCookieInterface(SecureCookieSessionInterface):
    """Flask's signed cookie with admin's own salt: other services' cookies never verify here."""

    salt = "nectar-admin-session"


def current_staff() -> StaffUser:
    """The signed-in staff member of this request (also `g.staff`); the gate guarantees one."""
    staff = g.get("staff")
    if staff is None:
        abort(401)
    return staff


def can_write() -> bool:
    """For templates: whether to show write buttons (read_only staff get 403 on writes anyway)."""
    staff = g.get("staff")
    return staff is not None and staff.role != "read_only"


def is_superadmin() -> bool:
    staff = g.get("staff")
    return staff is not None and staff.role == "superadmin"


def superadmin_required(view):
    """The view is for superadmins; other staff get 403."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if current_staff().role != "superadmin":
            abort(403, "Only a superadmin may do this.")
        return view(*args, **kwargs)

    return wrapped


def sign_in_session(row) -> None:
    """Points the cookie at a new staff_sessions row; nothing from before carries over."""
    session.clear()
    session[SESSION_KEY] = str(row.id)
    session.permanent = False


def live_session() -> service.LiveSession | None:
    return g.get("staff_live_session")


def gate():
    """before_request: a live staff session, a second factor where needed, and read-only respected."""
    g.staff = None
    endpoint = request.endpoint
    if endpoint is None or endpoint in PUBLIC_ENDPOINTS:
        return None  # no such route (404 or 405 follows, revealing nothing), health checks, static files
    live = service.load_session(db.session, session.get(SESSION_KEY))
    if endpoint in SIGN_IN_ENDPOINTS:
        if live is not None:  # the login page says who is signed in; logout ends that session
            g.staff, g.staff_live_session = live.staff, live
        return None
    if live is None:
        session.pop(SESSION_KEY, None)
        if wants_json():
            return problem(401, "Sign in to the admin service first.")
        return redirect(f"/login?{_next_query()}")
    g.staff, g.staff_live_session = live.staff, live
    if not live.second_factor_done and endpoint not in SECOND_FACTOR_ENDPOINTS:
        step = "/login/totp" if live.staff.totp_enabled_at else "/account/totp"
        if wants_json():
            return problem(403, "Finish two-factor authentication first.", location=step)
        return redirect(step)
    if request.method in UNSAFE and live.staff.role == "read_only" and endpoint not in READ_ONLY_WRITES:
        abort(403, "Your staff role is read-only.")
    return None


def _next_query() -> str:
    target = request.full_path if request.query_string else request.path
    return urlencode({"next": target}) if request.method == "GET" else urlencode({"next": "/"})
