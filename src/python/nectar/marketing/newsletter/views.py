"""Newsletter pages: sign up, confirm (a button, never a GET), unsubscribe in one click, resubscribe."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from nectar.marketing.extensions import csrf
from nectar.marketing.limits import RateLimited, refused
from nectar.marketing.links import app_links
from nectar.marketing.newsletter import service
from nectar.marketing.newsletter.forms import NewsletterForm
from nectar.shared.database import db
from nectar.shared.tokens import TokenInvalid
from nectar.shared.web import form_status

newsletter = Blueprint("newsletter", __name__, url_prefix="/newsletter")


def _link_problem(invalid: TokenInvalid):
    page = render_template("marketing/newsletter/link_problem.html", message=str(invalid))
    return page, 400


@newsletter.route("", methods=["GET", "POST"])
def signup():
    form = NewsletterForm(source=request.args.get("source", "newsletter"))
    if form.validate_on_submit():
        try:
            service.subscribe(
                db.session, app_links(), form.email.data.strip(), form.source.data, request.remote_addr
            )
        except RateLimited as limited:
            return refused(
                limited, render_template("marketing/newsletter/signup.html", form=form, error=str(limited))
            )
        db.session.commit()
        return redirect(url_for("newsletter.check_inbox"))
    return render_template("marketing/newsletter/signup.html", form=form), form_status(form)


@newsletter.get("/check-your-inbox")
def check_inbox():
    return render_template("marketing/newsletter/check_inbox.html")


@newsletter.get("/confirm/<token>")
def confirm_page(token: str):
    # A GET only shows the button: mail scanners open links, and must not subscribe anyone.
    try:
        _subscriber, email = service.read_confirmation(current_app.secret_key, token)
    except TokenInvalid as invalid:
        return _link_problem(invalid)
    return render_template("marketing/newsletter/confirm.html", email=email)


@newsletter.post("/confirm/<token>")
def confirm(token: str):
    try:
        result = service.confirm(db.session, app_links(), token)
    except TokenInvalid as invalid:
        return _link_problem(invalid)
    db.session.commit()
    return render_template("marketing/newsletter/confirmed.html", email=result.email)


@newsletter.get("/unsubscribe/<token>")
def unsubscribe_page(token: str):
    try:
        email = service.read_unsubscribe(current_app.secret_key, token)
    except TokenInvalid as invalid:
        return _link_problem(invalid)
    return render_template("marketing/newsletter/unsubscribe.html", email=email)


# RFC 8058 one-click: mail clients POST "List-Unsubscribe=One-Click" here with no cookies and no CSRF
# token; the signed token in the URL is the authorisation.
@csrf.exempt
@newsletter.post("/unsubscribe/<token>")
def unsubscribe(token: str):
    try:
        email = service.unsubscribe(db.session, current_app.secret_key, token)
    except TokenInvalid as invalid:
        return _link_problem(invalid)
    db.session.commit()
    return render_template("marketing/newsletter/unsubscribed.html", email=email, token=token)


@newsletter.post("/resubscribe/<token>")
def resubscribe(token: str):
    try:
        service.resubscribe(db.session, app_links(), token, request.remote_addr)
    except TokenInvalid as invalid:
        return _link_problem(invalid)
    except RateLimited as limited:
        page = render_template(
            "marketing/newsletter/link_problem.html", heading="Please wait a little", message=str(limited)
        )
        return refused(limited, page)
    db.session.commit()
    return redirect(url_for("newsletter.check_inbox"))
