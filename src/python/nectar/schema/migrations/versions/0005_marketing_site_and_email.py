"""Marketing: indexes for sending campaigns (walking confirmed subscribers, counting a campaign's mail).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keyset batches (status = 'confirmed' AND id > last ORDER BY id) read the index in order.
    op.create_index(
        "ix_newsletter_subscribers_status_id", "newsletter_subscribers", ["status", "id"], unique=False
    )
    op.drop_index("ix_newsletter_subscribers_status", table_name="newsletter_subscribers")
    # A campaign's sent_count, and deleting a campaign (the foreign key's ON DELETE SET NULL).
    op.create_index("ix_email_outbox_campaign_id", "email_outbox", ["campaign_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_email_outbox_campaign_id", table_name="email_outbox")
    op.create_index("ix_newsletter_subscribers_status", "newsletter_subscribers", ["status"], unique=False)
    op.drop_index("ix_newsletter_subscribers_status_id", table_name="newsletter_subscribers")
