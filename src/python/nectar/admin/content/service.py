"""Content staff write and marketing publishes or sends: blog posts, email templates, campaigns.

Admin stores; marketing serves published posts whose date has come, and its worker sends campaigns
that are `scheduled` once `scheduled_at` is due, in batches, to confirmed subscribers. So "send now"
is "scheduled, due now"; cancelling stops a scheduled campaign, or a sending one before its next batch.
"Now" is datetime.now(UTC), the clock marketing compares publish and send dates with.
Every change records one audit entry with the fields it changed.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nectar.admin import audit
from nectar.marketing.contract.campaigns import CONTENT_PLACEHOLDER
from nectar.schema.models import BlogPost, Campaign, EmailTemplate, NewsletterSubscriber
from nectar.shared.rejection import InputRejected

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
TEMPLATE_KEY = re.compile(r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$")
EDITABLE_CAMPAIGN = ("draft", "scheduled", "cancelled")
CANCELLABLE_CAMPAIGN = ("scheduled", "sending")


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:200].strip("-")


SAMPLE_CONTENT = "*Each campaign's own text appears here.*"


def as_utc(value: datetime | None) -> datetime | None:
    """A date and time typed into a form (which states UTC) as an aware UTC datetime."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _apply_changes(row, values: dict, action: str, target: str, flush=lambda: None) -> None:
    """Sets `values` on `row`, flushes, and audits only the fields that changed (audit.record makes
    them JSON-safe); an edit that changes nothing is refused."""
    before = {name: getattr(row, name) for name, value in values.items() if getattr(row, name) != value}
    if not before:
        raise InputRejected("Nothing changed.")
    after = {name: values[name] for name in before}
    for name, value in values.items():
        setattr(row, name, value)
    flush()
    audit.record(action, target=target, before=before, after=after)


def _flush_unique(session: Session, constraint: str, message: str, field: str) -> None:
    """Flushes; a concurrent save that took the same unique value becomes `message` on `field`."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as error:
        if getattr(getattr(error.orig, "diag", None), "constraint_name", None) == constraint:
            raise InputRejected(message, field) from None
        raise


# Blog posts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostInput:
    title: str
    slug: str
    summary: str | None
    body_markdown: str
    status: str  # draft | published
    published_at: datetime | None
    author_name: str | None


def post_state(post: BlogPost, now: datetime) -> str:
    """draft, scheduled (published with a future date) or published."""
    if post.status != "published":
        return "draft"
    return "scheduled" if post.published_at and post.published_at > now else "published"


def posts_statement() -> Select:
    return select(BlogPost).order_by(BlogPost.updated_at.desc(), BlogPost.id)


def get_post(session: Session, post_id: uuid.UUID) -> BlogPost:
    post = session.get(BlogPost, post_id)
    if post is None:
        raise LookupError(f"no post {post_id}")
    return post


def _post_values(session: Session, data: PostInput, post: BlogPost | None) -> dict:
    post_id = post.id if post else None
    slug = (data.slug or "").strip().lower() or slugify(data.title)
    if not SLUG.fullmatch(slug):
        raise InputRejected(
            "Use lowercase letters, digits and single dashes (e.g. launch-notes).", field="slug"
        )
    taken = session.scalar(select(BlogPost.id).where(BlogPost.slug == slug, BlogPost.id != post_id))
    if taken:
        raise InputRejected(f"Another post already uses /{slug}; choose another address.", field="slug")
    published_at = data.published_at
    if data.status == "published" and published_at is None:
        published_at = datetime.now(UTC)  # publish now
    elif post and post.published_at and published_at == post.published_at.replace(second=0, microsecond=0):
        published_at = post.published_at  # the form shows minutes: an untouched date keeps its seconds
    return {
        "title": data.title.strip(),
        "slug": slug,
        "summary": (data.summary or "").strip() or None,
        "body_markdown": data.body_markdown,
        "status": data.status,
        "published_at": published_at,
        "author_name": (data.author_name or "").strip() or None,
    }


def _flush_post(session: Session) -> None:
    _flush_unique(
        session, "uq_blog_posts_slug", "Another post already uses that address; choose another.", "slug"
    )


def create_post(session: Session, data: PostInput) -> BlogPost:
    values = _post_values(session, data, None)
    post = BlogPost(**values)
    session.add(post)
    _flush_post(session)
    audit.record("blog.create", target=f"blog:{post.id}", after=values)
    return post


def update_post(session: Session, post_id: uuid.UUID, data: PostInput) -> BlogPost:
    post = get_post(session, post_id)
    values = _post_values(session, data, post)
    _apply_changes(post, values, "blog.update", f"blog:{post.id}", lambda: _flush_post(session))
    return post


# Email templates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateInput:
    key: str
    name: str
    subject: str
    body_markdown: str


def templates(session: Session) -> list[EmailTemplate]:
    return list(session.scalars(select(EmailTemplate).order_by(EmailTemplate.key)))


def get_template(session: Session, template_id: uuid.UUID) -> EmailTemplate:
    template = session.get(EmailTemplate, template_id)
    if template is None:
        raise LookupError(f"no template {template_id}")
    return template


def _template_values(session: Session, data: TemplateInput, template_id: uuid.UUID | None) -> dict:
    key = data.key.strip().lower()
    if not TEMPLATE_KEY.fullmatch(key):
        raise InputRejected(
            "Use lowercase letters and digits, joined by - _ or . (e.g. newsletter).", field="key"
        )
    if session.scalar(
        select(EmailTemplate.id).where(EmailTemplate.key == key, EmailTemplate.id != template_id)
    ):
        raise InputRejected(f"A template with the key {key} exists already.", field="key")
    if not CONTENT_PLACEHOLDER.search(data.body_markdown):
        raise InputRejected("Put {content} where each campaign's own text goes.", field="body_markdown")
    return {
        "key": key,
        "name": data.name.strip(),
        "subject": data.subject.strip(),
        "body_markdown": data.body_markdown,
    }


def _flush_template(session: Session) -> None:
    _flush_unique(session, "uq_email_templates_key", "A template with that key exists already.", "key")


def create_template(session: Session, data: TemplateInput) -> EmailTemplate:
    values = _template_values(session, data, None)
    template = EmailTemplate(**values)
    session.add(template)
    _flush_template(session)
    audit.record("template.create", target=f"template:{template.id}", after=values)
    return template


def update_template(session: Session, template_id: uuid.UUID, data: TemplateInput) -> EmailTemplate:
    template = get_template(session, template_id)
    values = _template_values(session, data, template.id)
    _apply_changes(
        template, values, "template.update", f"template:{template.id}", lambda: _flush_template(session)
    )
    return template


# Campaigns -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignInput:
    name: str
    subject: str
    body_markdown: str
    template_id: uuid.UUID | None


def campaigns_statement() -> Select:
    return select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id)


def get_campaign(session: Session, campaign_id: uuid.UUID, *, for_update: bool = False) -> Campaign:
    statement = select(Campaign).where(Campaign.id == campaign_id)
    if for_update:
        statement = statement.with_for_update()
    campaign = session.scalars(statement).one_or_none()
    if campaign is None:
        raise LookupError(f"no campaign {campaign_id}")
    return campaign


def confirmed_subscribers(session: Session) -> int:
    """How many a campaign goes to: subscribers who confirmed and have not left."""
    return session.scalar(
        select(func.count())
        .select_from(NewsletterSubscriber)
        .where(NewsletterSubscriber.status == "confirmed")
    )


def _campaign_values(session: Session, data: CampaignInput) -> dict:
    if data.template_id is not None and session.get(EmailTemplate, data.template_id) is None:
        raise InputRejected("That template no longer exists; choose another.", field="template_id")
    return {
        "name": data.name.strip(),
        "subject": data.subject.strip(),
        "body_markdown": data.body_markdown,
        "template_id": data.template_id,
    }


def create_campaign(session: Session, data: CampaignInput, staff_id: uuid.UUID | None) -> Campaign:
    values = _campaign_values(session, data)
    campaign = Campaign(**values, created_by=staff_id)
    session.add(campaign)
    session.flush()
    audit.record("campaign.create", target=f"campaign:{campaign.id}", after=values)
    return campaign


def update_campaign(session: Session, campaign_id: uuid.UUID, data: CampaignInput) -> Campaign:
    campaign = get_campaign(session, campaign_id, for_update=True)
    if campaign.status not in EDITABLE_CAMPAIGN:
        raise InputRejected(f"A campaign that is {campaign.status} can no longer be edited.")
    values = _campaign_values(session, data)
    _apply_changes(campaign, values, "campaign.update", f"campaign:{campaign.id}")
    return campaign


def schedule_campaign(session: Session, campaign_id: uuid.UUID, when: datetime | None) -> Campaign:
    """Hands the campaign to marketing's worker: `scheduled`, due at `when` (None: now)."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    if campaign.status not in EDITABLE_CAMPAIGN:
        raise InputRejected(f"The campaign is {campaign.status}; it cannot be scheduled again.")
    now = datetime.now(UTC)
    if when is not None:
        when = as_utc(when)
        if when <= now:
            raise InputRejected("Choose a time in the future, or send it now.", field="scheduled_at")
    before = {"status": campaign.status, "scheduled_at": campaign.scheduled_at}
    campaign.status = "scheduled"
    campaign.scheduled_at = when or now
    action = "campaign.schedule" if when else "campaign.send_now"
    audit.record(
        action,
        target=f"campaign:{campaign.id}",
        before=before,
        after={"status": "scheduled", "scheduled_at": campaign.scheduled_at},
    )
    return campaign


def cancel_campaign(session: Session, campaign_id: uuid.UUID) -> Campaign:
    """Stops a campaign: a scheduled one never starts; a sending one stops before the worker's next
    batch (the worker locks the row and checks the status per batch), so messages already queued
    still go out."""
    campaign = get_campaign(session, campaign_id, for_update=True)
    if campaign.status not in CANCELLABLE_CAMPAIGN:
        raise InputRejected(
            f"The campaign is {campaign.status}; only a scheduled or sending one can be cancelled."
        )
    before = {"status": campaign.status, "scheduled_at": campaign.scheduled_at}
    campaign.status = "cancelled"
    audit.record(
        "campaign.cancel", target=f"campaign:{campaign.id}", before=before, after={"status": "cancelled"}
    )
    return campaign
