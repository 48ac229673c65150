"""Content pages: blog posts, email templates and campaigns; write, preview, schedule, send.

A Preview button posts the form back to the same page with `action=preview`: it is rendered on the
server with the same code marketing uses, and nothing is stored.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from nectar.admin import audit
from nectar.admin.content import service
from nectar.admin.content.forms import (
    ActionForm,
    CampaignForm,
    PostForm,
    ScheduleForm,
    TemplateForm,
    TestSendForm,
)
from nectar.admin.listing import paginate, read_page
from nectar.admin.staff.access import current_staff
from nectar.marketing.contract import (
    CampaignNotFound,
    compose_campaign_email,
    queue_test_send,
    render_markdown,
    wrap_in_template,
)
from nectar.schema.models import BlogPost, EmailTemplate
from nectar.shared.config import Service
from nectar.shared.database import db
from nectar.shared.rejection import InputRejected, show_on_form
from nectar.shared.web import form_status

content = Blueprint("content", __name__, url_prefix="/content")
PER_PAGE = 50


def _previewing() -> bool:
    return request.form.get("action") == "preview"


def _saving(form) -> bool:
    """A valid submission of the Save button (a Preview is validated too, to show its errors)."""
    return form.validate_on_submit() and not _previewing()


def _save(form, success: str, change, *args):
    """Runs one service change, `change(db.session, *args)`, and commits it with its audit row; on
    bad input, rolls back and shows why next to the field. Returns the changed object, or None.
    (A LookupError is the app's 404.)"""
    try:
        result = change(db.session, *args)
    except InputRejected as error:
        db.session.rollback()
        for message in show_on_form(form, error):
            flash(message, "error")
        return None
    db.session.commit()
    flash(success, "success")
    return result


# Overview and blog posts -----------------------------------------------------------------------


@content.get("/")
def index():
    page = paginate(service.posts_statement(), read_page(request.args), PER_PAGE)
    return render_template(
        "admin/content/posts.html", page=page, now=datetime.now(UTC), state=service.post_state
    )


def _post_input(form: PostForm) -> service.PostInput:
    return service.PostInput(
        title=form.title.data or "",
        slug=form.slug.data or "",
        summary=form.summary.data,
        body_markdown=form.body_markdown.data or "",
        status=form.status.data,
        published_at=service.as_utc(form.published_at.data),
        author_name=form.author_name.data,
    )


def _post_page(form: PostForm, post=None):
    preview = (
        render_markdown(form.body_markdown.data or "") if _previewing() and form.body_markdown.data else None
    )
    return (
        render_template(
            "admin/content/post_form.html",
            form=form,
            post=post,
            preview=preview,
            now=datetime.now(UTC),
            state=service.post_state,
        ),
        form_status(form),
    )


@content.route("/posts/new", methods=["GET", "POST"])
def new_post():
    form = PostForm(author_name=current_staff().display_name)
    if _saving(form):
        post = _save(form, "Post saved.", service.create_post, _post_input(form))
        if post is not None:
            return redirect(url_for("content.edit_post", post_id=post.id))
    return _post_page(form)


@content.route("/posts/<uuid:post_id>", methods=["GET", "POST"])
def edit_post(post_id: uuid.UUID):
    post = db.get_or_404(BlogPost, post_id, description="There is no such post.")
    form = PostForm(obj=post)
    if _saving(form):
        if _save(form, "Post saved.", service.update_post, post_id, _post_input(form)) is not None:
            return redirect(url_for("content.edit_post", post_id=post_id))
    return _post_page(form, post)


# Email templates -------------------------------------------------------------------------------


@content.get("/templates")
def templates():
    return render_template("admin/content/templates.html", templates=service.templates(db.session))


def _template_input(form: TemplateForm) -> service.TemplateInput:
    return service.TemplateInput(
        key=form.key.data or "", name=form.name.data or "", subject=form.subject.data or "",
        body_markdown=form.body_markdown.data or "",
    )  # fmt: skip


def _template_page(form: TemplateForm, template=None):
    preview = None
    if _previewing() and form.body_markdown.data:
        preview = render_markdown(wrap_in_template(form.body_markdown.data, service.SAMPLE_CONTENT))
    return (
        render_template("admin/content/template_form.html", form=form, template=template, preview=preview),
        form_status(form),
    )


@content.route("/templates/new", methods=["GET", "POST"])
def new_template():
    form = TemplateForm()
    if _saving(form):
        template = _save(form, "Template saved.", service.create_template, _template_input(form))
        if template is not None:
            return redirect(url_for("content.edit_template", template_id=template.id))
    return _template_page(form)


@content.route("/templates/<uuid:template_id>", methods=["GET", "POST"])
def edit_template(template_id: uuid.UUID):
    template = db.get_or_404(EmailTemplate, template_id, description="There is no such template.")
    form = TemplateForm(obj=template)
    if _saving(form):
        if _save(form, "Template saved.", service.update_template, template_id, _template_input(form)):
            return redirect(url_for("content.edit_template", template_id=template_id))
    return _template_page(form, template)


# Campaigns -------------------------------------------------------------------------------------


@content.get("/campaigns")
def campaigns():
    page = paginate(service.campaigns_statement(), read_page(request.args), PER_PAGE)
    return render_template(
        "admin/content/campaigns.html", page=page, subscribers=service.confirmed_subscribers(db.session)
    )


def _campaign_input(form: CampaignForm) -> service.CampaignInput:
    return service.CampaignInput(
        name=form.name.data or "",
        subject=form.subject.data or "",
        body_markdown=form.body_markdown.data or "",
        template_id=uuid.UUID(form.template_id.data) if form.template_id.data else None,
    )


def _email_preview(subject: str, markdown: str):
    """The message exactly as a subscriber gets it (their own unsubscribe link aside)."""
    marketing = current_app.config["NECTAR_SETTINGS"].service_urls[Service.MARKETING]
    example_link = f"{marketing.rstrip('/')}/newsletter/unsubscribe/each-subscribers-own-link"
    return compose_campaign_email(subject, markdown, current_staff().email, example_link)


def _campaign_preview(subject: str, body_markdown: str, template_id: uuid.UUID | None):
    """The email of a campaign as stored or as typed, in its template (taken from the session's
    identity map when the page has loaded the templates already)."""
    template = db.session.get(EmailTemplate, template_id) if template_id else None
    markdown = wrap_in_template(template.body_markdown if template else None, body_markdown)
    return _email_preview(subject, markdown)


def _form_preview(form: CampaignForm):
    template_id = uuid.UUID(form.template_id.data) if form.template_id.data else None
    return _campaign_preview(form.subject.data or "", form.body_markdown.data or "", template_id)


@content.route("/campaigns/new", methods=["GET", "POST"])
def new_campaign():
    form = CampaignForm(templates=service.templates(db.session))
    preview = None
    if form.validate_on_submit():
        if _previewing():
            preview = _form_preview(form)
        else:
            campaign = _save(
                form,
                "Campaign saved as a draft.",
                service.create_campaign,
                _campaign_input(form),
                current_staff().id,
            )
            if campaign is not None:
                return redirect(url_for("content.campaign", campaign_id=campaign.id))
    return (
        render_template("admin/content/campaign_new.html", form=form, preview=preview),
        form_status(form),
    )


def _utc_naive(value):
    """For a datetime-local field, which states UTC and takes no zone."""
    return service.as_utc(value).replace(tzinfo=None) if value else None


def _campaign_page(campaign_id: uuid.UUID, *, form=None, test_form=None, schedule_form=None, preview=None):
    try:
        campaign = service.get_campaign(db.session, campaign_id)
    except LookupError:
        abort(404, "There is no such campaign.")
    if form is None:
        form = CampaignForm(obj=campaign, templates=service.templates(db.session))
        form.template_id.data = str(campaign.template_id or "")
    if preview is None:
        preview = _campaign_preview(campaign.subject, campaign.body_markdown, campaign.template_id)
    return (
        render_template(
            "admin/content/campaign.html",
            campaign=campaign,
            editable=campaign.status in service.EDITABLE_CAMPAIGN,
            form=form,
            test_form=test_form or TestSendForm(to_address=current_staff().email),
            schedule_form=schedule_form or ScheduleForm(scheduled_at=_utc_naive(campaign.scheduled_at)),
            action_form=ActionForm(),
            preview=preview,
            subscribers=service.confirmed_subscribers(db.session),
        ),
        form_status(*(f for f in (form, test_form, schedule_form) if f is not None)),
    )


@content.route("/campaigns/<uuid:campaign_id>", methods=["GET", "POST"])
def campaign(campaign_id: uuid.UUID):
    if request.method == "GET":
        return _campaign_page(campaign_id)
    form = CampaignForm(templates=service.templates(db.session))
    if not form.validate_on_submit():
        return _campaign_page(campaign_id, form=form)
    if _previewing():
        return _campaign_page(campaign_id, form=form, preview=_form_preview(form))
    if _save(form, "Campaign saved.", service.update_campaign, campaign_id, _campaign_input(form)) is None:
        return _campaign_page(campaign_id, form=form)
    return redirect(url_for("content.campaign", campaign_id=campaign_id))


@content.post("/campaigns/<uuid:campaign_id>/test")
def test_send(campaign_id: uuid.UUID):
    form = TestSendForm()
    if not form.validate_on_submit():
        return _campaign_page(campaign_id, test_form=form)
    try:
        message_id = queue_test_send(db.session, campaign_id, form.to_address.data)
    except CampaignNotFound:
        db.session.rollback()
        abort(404, "There is no such campaign.")
    except InputRejected as error:
        db.session.rollback()
        show_on_form(form, error, "to_address")
        return _campaign_page(campaign_id, test_form=form)
    audit.record(
        "campaign.test_send",
        target=f"campaign:{campaign_id}",
        after={"to": form.to_address.data.strip(), "outbox_id": str(message_id)},
    )
    db.session.commit()
    flash(f"A test copy to {form.to_address.data.strip()} is in the outbox.", "success")
    return redirect(url_for("content.campaign", campaign_id=campaign_id))


@content.post("/campaigns/<uuid:campaign_id>/schedule")
def schedule(campaign_id: uuid.UUID):
    form = ScheduleForm()
    if not form.validate_on_submit():
        return _campaign_page(campaign_id, schedule_form=form)
    when = service.as_utc(form.scheduled_at.data)
    if _save(form, "Campaign scheduled.", service.schedule_campaign, campaign_id, when) is None:
        return _campaign_page(campaign_id, schedule_form=form)
    return redirect(url_for("content.campaign", campaign_id=campaign_id))


def _button_action(campaign_id: uuid.UUID, success: str, change, *args):
    if not ActionForm().validate_on_submit():
        abort(400, "The form expired; try again.")
    _save(ActionForm(), success, change, campaign_id, *args)
    return redirect(url_for("content.campaign", campaign_id=campaign_id))


@content.post("/campaigns/<uuid:campaign_id>/send")
def send_now(campaign_id: uuid.UUID):
    sending = "Sending: marketing's worker sends it to confirmed subscribers in batches."
    return _button_action(campaign_id, sending, service.schedule_campaign, None)


@content.post("/campaigns/<uuid:campaign_id>/cancel")
def cancel(campaign_id: uuid.UUID):
    return _button_action(campaign_id, "Campaign cancelled.", service.cancel_campaign)
