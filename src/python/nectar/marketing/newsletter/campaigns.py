"""Sending campaigns that staff scheduled in admin: every confirmed subscriber gets one message,
queued through the outbox in batches.

Each batch is its own transaction, and each message has the dedupe key
"campaign:<campaign>:<subscriber>" with ON CONFLICT DO NOTHING, so a worker that dies mid-way
leaves the campaign 'sending', the next run walks the list again, and nobody gets it twice.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from nectar.marketing.contract.campaigns import CampaignNotFound, NewsletterMessage, campaign_markdown
from nectar.marketing.links import Links
from nectar.shared.mail import OUTBOX_INSERT_ONCE_SQL, outbox_params

BATCH_SIZE = 500
log = logging.getLogger(__name__)

CLAIM_DUE = text(
    "UPDATE campaigns SET status = 'sending', started_at = COALESCE(started_at, :now), updated_at = now() "
    "WHERE id IN (SELECT id FROM campaigns WHERE status = 'scheduled' AND scheduled_at <= :now "
    "ORDER BY scheduled_at FOR UPDATE SKIP LOCKED)"
)
# Campaigns just claimed and any a worker left half-done. The worker runs dispatch under one lock, so
# none is in progress; were two runs to overlap, the dedupe keys would still let each subscriber get
# one message.
UNFINISHED = text("SELECT id FROM campaigns WHERE status = 'sending' ORDER BY started_at")
NEXT_SUBSCRIBERS = text(
    "SELECT id, email FROM newsletter_subscribers WHERE status = 'confirmed' AND id > :after "
    "ORDER BY id LIMIT :limit"
)
FINISH = text(
    "UPDATE campaigns SET status = 'sent', finished_at = :now, updated_at = now(), "
    "sent_count = (SELECT count(*) FROM email_outbox WHERE campaign_id = :id AND category = 'campaign') "
    "WHERE id = :id AND status = 'sending'"
)
LOWEST_ID = uuid.UUID(int=0)


def dispatch_due(
    engine: Engine, links: Links, *, now: datetime | None = None, batch_size: int = BATCH_SIZE
) -> list:
    """Starts every campaign whose time has come, resumes any left 'sending', and sends them all.
    Returns the ids of the campaigns that finished."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(CLAIM_DUE, {"now": now})
        sending = conn.execute(UNFINISHED).scalars().all()
    finished = []
    for campaign_id in sending:
        if send_campaign(engine, links, campaign_id, batch_size=batch_size):
            finished.append(campaign_id)
    return finished


def send_campaign(engine: Engine, links: Links, campaign_id, *, batch_size: int = BATCH_SIZE) -> bool:
    """Queues the campaign for every confirmed subscriber and marks it sent; returns False when it
    was cancelled (or finished elsewhere) on the way."""
    with Session(engine) as session:
        try:
            subject, body = campaign_markdown(session, campaign_id)
        except CampaignNotFound:
            return False
    message = NewsletterMessage.from_markdown(subject, body)
    after = LOWEST_ID
    while True:
        with engine.begin() as conn:
            # Locking the campaign row per batch: a cancel in admin waits for the batch, then stops the rest.
            status = conn.execute(
                text("SELECT status FROM campaigns WHERE id = :id FOR UPDATE"), {"id": campaign_id}
            ).scalar()
            if status != "sending":
                log.info("campaign %s: stopped, its status is %s", campaign_id, status)
                return False
            subscribers = conn.execute(NEXT_SUBSCRIBERS, {"after": after, "limit": batch_size}).all()
            if not subscribers:
                conn.execute(FINISH, {"id": campaign_id, "now": datetime.now(UTC)})
                log.info("campaign %s: sent", campaign_id)
                return True
            conn.exec_driver_sql(
                OUTBOX_INSERT_ONCE_SQL, [_row(message, links, campaign_id, s) for s in subscribers]
            )
        after = subscribers[-1].id


def _row(message: NewsletterMessage, links: Links, campaign_id, subscriber) -> dict:
    email = message.to(
        subscriber.email,
        links.unsubscribe_url(subscriber.email),
        dedupe_key=f"campaign:{campaign_id}:{subscriber.id}",
        campaign_id=campaign_id,
    )
    return outbox_params(email)
