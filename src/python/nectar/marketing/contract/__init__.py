"""Marketing's contract: the part of marketing that admin may import (shapes it shares, no internals).

The database is the rest of the contract. Admin writes blog posts, email templates and campaigns;
marketing publishes and sends them:
- blog_posts: shown when status = 'published' and published_at <= now().
- campaigns: admin sets status = 'scheduled' and scheduled_at (now() for "send now"); marketing's
  worker marks it 'sending' (started_at), queues one outbox message per confirmed subscriber
  (dedupe_key "campaign:<campaign id>:<subscriber id>", so a re-run never doubles one), then 'sent'
  with finished_at and sent_count (messages queued). Setting status = 'cancelled' while it is
  sending stops it before the next batch.
- email_outbox: a staff retry sets status = 'pending', next_attempt_at = now() on a failed row;
  the worker then sends it once more.

`compose_campaign_email` and `render_markdown` make exactly what subscribers get, for previews;
`queue_test_send` queues one copy of a stored campaign to one address.
"""

from nectar.marketing.contract.campaigns import (
    CAMPAIGN_CATEGORY,
    TEST_CATEGORY,
    CampaignNotFound,
    campaign_markdown,
    compose_campaign_email,
    queue_test_send,
    wrap_in_template,
)
from nectar.shared.content import render_markdown

__all__ = [
    "CAMPAIGN_CATEGORY",
    "TEST_CATEGORY",
    "CampaignNotFound",
    "campaign_markdown",
    "compose_campaign_email",
    "queue_test_send",
    "render_markdown",
    "wrap_in_template",
]
