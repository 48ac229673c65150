"""Unsubscribing from an organization's mail: the link every such message carries, as a page with
a button and as the RFC 8058 one-click POST that mail clients send."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from nectar.core.extensions import csrf
from nectar.core.org_mail import service
from nectar.schema.models import Organization
from nectar.shared.database import db, scope_session
from nectar.shared.tokens import TokenInvalid

org_mail = Blueprint("org_mail", __name__, url_prefix=service.UNSUBSCRIBE_PATH.rstrip("/"))


def _link(token: str):
    """The organization (scoping the session to it) and address the link names, or an error page."""
    try:
        org_id, address = service.read_unsubscribe(current_app.secret_key, token)
    except TokenInvalid as invalid:
        return None, None, _problem(str(invalid))
    scope_session(db.session, org_id=org_id)
    org = db.session.get(Organization, org_id)
    if org is None:
        return None, None, _problem("This organization does not exist any more: it sends no mail.")
    return org, address, None


def _problem(message: str):
    page = render_template("core/accounts/message.html", title="Link not valid", message=message)
    return page, 400


@org_mail.get("/<token>")
def unsubscribe_page(token: str):
    org, address, refused = _link(token)
    if refused:
        return refused
    return render_template("core/org_mail/unsubscribe.html", org=org, address=address)


# RFC 8058 one-click: mail clients POST here with no cookie and no CSRF token; the signed token in
# the URL is the authorisation.
@csrf.exempt
@org_mail.post("/<token>")
def unsubscribe(token: str):
    org, address, refused = _link(token)
    if refused:
        return refused
    service.suppress(db.session, org.id, address)
    db.session.commit()
    return render_template("core/org_mail/unsubscribed.html", org=org, address=address)
