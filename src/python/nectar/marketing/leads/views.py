"""The contact page: the lead form, its spam defences, and the thank-you page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from nectar.marketing.leads import service
from nectar.marketing.leads.forms import UTM_FIELDS, ContactForm
from nectar.marketing.limits import RateLimited, refused
from nectar.shared.database import db
from nectar.shared.web import form_status

leads = Blueprint("leads", __name__)


def _form() -> ContactForm:
    # A campaign link such as /contact?utm_source=x&source=pricing fills the hidden fields.
    prefill = {name: request.args.get(name, "")[:200] for name in UTM_FIELDS}
    return ContactForm(source=request.args.get("source", "contact")[:100], **prefill)


@leads.route("/contact", methods=["GET", "POST"])
def contact():
    form = _form()
    if form.validate_on_submit():
        if form.website.data:
            # A bot filled the hidden field: store nothing, and answer exactly as for a person.
            return redirect(url_for("leads.thanks"))
        inquiry = service.Inquiry(
            name=form.name.data.strip(),
            email=form.email.data.strip(),
            company=(form.company.data or "").strip() or None,
            message=form.message.data.strip(),
            source=(form.source.data or "").strip() or None,
            utm=form.utm(),
            address=request.remote_addr,
            user_agent=request.user_agent.string,
        )
        try:
            service.submit_inquiry(db.session, inquiry)
        except RateLimited as limited:
            return refused(
                limited, render_template("marketing/leads/contact.html", form=form, error=str(limited))
            )
        db.session.commit()
        return redirect(url_for("leads.thanks"))
    return render_template("marketing/leads/contact.html", form=form), form_status(form)


@leads.get("/contact/thanks")
def thanks():
    return render_template("marketing/leads/thanks.html")
