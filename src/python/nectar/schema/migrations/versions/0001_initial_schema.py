"""Initial schema: every table of the product, its grants and row-level security

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nectar.schema.access import access_of, database_access_sql, secure_table_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS citext")
    created: list[sa.Table] = []
    created.append(
        op.create_table(
            "audit_log",
            sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
            sa.Column("actor", sa.String(length=320), nullable=False),
            sa.Column("actor_id", sa.UUID(), nullable=True),
            sa.Column("action", sa.String(length=100), nullable=False),
            sa.Column("target", sa.String(length=200), nullable=True),
            sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
            sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
            sa.Column("address", postgresql.INET(), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
            info={"service": "admin", "append_only": True},
        )
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"], unique=False)
    op.create_index("ix_audit_log_target", "audit_log", ["target"], unique=False)
    created.append(
        op.create_table(
            "blog_posts",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("slug", sa.String(length=200), nullable=False),
            sa.Column("title", sa.String(length=300), nullable=False),
            sa.Column("summary", sa.String(length=500), nullable=True),
            sa.Column("body_markdown", sa.Text(), nullable=False),
            sa.Column("status", sa.String(length=20), server_default="draft", nullable=False),
            sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("author_name", sa.String(length=200), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint("status IN ('draft', 'published')", name=op.f("ck_blog_posts_status")),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_blog_posts")),
            sa.UniqueConstraint("slug", name=op.f("uq_blog_posts_slug")),
            info={"service": "marketing"},
        )
    )
    op.create_index(
        "ix_blog_posts_status_published_at", "blog_posts", ["status", "published_at"], unique=False
    )
    created.append(
        op.create_table(
            "catalog_services",
            sa.Column("key", sa.String(length=40), nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("config_schema", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
            sa.Column("credentials_schema", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.PrimaryKeyConstraint("key", name=op.f("pk_catalog_services")),
            info={"service": "core"},
        )
    )
    created.append(
        op.create_table(
            "email_templates",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("key", sa.String(length=100), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("subject", sa.String(length=300), nullable=False),
            sa.Column("body_markdown", sa.Text(), nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_email_templates")),
            sa.UniqueConstraint("key", name=op.f("uq_email_templates_key")),
            info={"service": "marketing"},
        )
    )
    created.append(
        op.create_table(
            "newsletter_subscribers",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("email", postgresql.CITEXT(), nullable=False),
            sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
            sa.Column("source", sa.String(length=100), nullable=True),
            sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint(
                "status IN ('pending', 'confirmed', 'unsubscribed')",
                name=op.f("ck_newsletter_subscribers_status"),
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_newsletter_subscribers")),
            sa.UniqueConstraint("email", name=op.f("uq_newsletter_subscribers_email")),
            info={"service": "marketing"},
        )
    )
    op.create_index("ix_newsletter_subscribers_status", "newsletter_subscribers", ["status"], unique=False)
    created.append(
        op.create_table(
            "organizations",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("slug", sa.String(length=63), nullable=False),
            sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
            sa.Column("plan", sa.String(length=40), server_default="free", nullable=False),
            sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
            sa.Column("suspended_reason", sa.Text(), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f("ck_organizations_status")),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
            sa.UniqueConstraint("slug", name=op.f("uq_organizations_slug")),
            info={"service": "core", "tenant_column": "id"},
        )
    )
    created.append(
        op.create_table(
            "staff_users",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("email", postgresql.CITEXT(), nullable=False),
            sa.Column("display_name", sa.String(length=200), nullable=True),
            sa.Column("password_hash", sa.Text(), nullable=False),
            sa.Column("role", sa.String(length=20), nullable=False),
            sa.Column("totp_secret_ciphertext", sa.LargeBinary(), nullable=True),
            sa.Column("totp_enabled_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
            sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint(
                "role IN ('superadmin', 'support', 'read_only')", name=op.f("ck_staff_users_role")
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_users")),
            sa.UniqueConstraint("email", name=op.f("uq_staff_users_email")),
            info={"service": "admin"},
        )
    )
    created.append(
        op.create_table(
            "stripe_events",
            sa.Column("id", sa.String(length=255), nullable=False),
            sa.Column("type", sa.String(length=100), nullable=False),
            sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
            sa.Column("stripe_created", sa.BigInteger(), nullable=False),
            sa.Column("livemode", sa.Boolean(), server_default="false", nullable=False),
            sa.Column(
                "received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
            info={"service": "marketing"},
        )
    )
    op.create_index(
        "ix_stripe_events_pending",
        "stripe_events",
        ["received_at"],
        unique=False,
        postgresql_where="processed_at IS NULL",
    )
    created.append(
        op.create_table(
            "users",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("email", postgresql.CITEXT(), nullable=False),
            sa.Column("password_hash", sa.Text(), nullable=True),
            sa.Column("display_name", sa.String(length=200), nullable=True),
            sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
            sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
            sa.UniqueConstraint("email", name=op.f("uq_users_email")),
            info={"service": "core"},
        )
    )
    created.append(
        op.create_table(
            "api_keys",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("prefix", sa.String(length=24), nullable=False),
            sa.Column("key_hash", sa.String(length=128), nullable=False),
            sa.Column("created_by", sa.UUID(), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(
                ["created_by"], ["users.id"], name=op.f("fk_api_keys_created_by_users"), ondelete="SET NULL"
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_api_keys_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
            sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
            sa.UniqueConstraint("org_id", "id", name="uq_api_keys_org_id_id"),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    created.append(
        op.create_table(
            "campaigns",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("subject", sa.String(length=300), nullable=False),
            sa.Column("template_id", sa.UUID(), nullable=True),
            sa.Column("body_markdown", sa.Text(), nullable=False),
            sa.Column("status", sa.String(length=20), server_default="draft", nullable=False),
            sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("sent_count", sa.Integer(), server_default="0", nullable=False),
            sa.Column("created_by", sa.UUID(), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint(
                "status IN ('draft', 'scheduled', 'sending', 'sent', 'cancelled')",
                name=op.f("ck_campaigns_status"),
            ),
            sa.ForeignKeyConstraint(
                ["created_by"],
                ["staff_users.id"],
                name=op.f("fk_campaigns_created_by_staff_users"),
                ondelete="SET NULL",
            ),
            sa.ForeignKeyConstraint(
                ["template_id"],
                ["email_templates.id"],
                name=op.f("fk_campaigns_template_id_email_templates"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
            info={"service": "marketing"},
        )
    )
    created.append(
        op.create_table(
            "integration_connections",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("service_key", sa.String(length=40), nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
            sa.Column("credentials_ciphertext", sa.LargeBinary(), nullable=True),
            sa.Column("key_id", sa.String(length=40), nullable=True),
            sa.Column("created_by", sa.UUID(), nullable=True),
            sa.Column("last_tested_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_test_ok", sa.Boolean(), nullable=True),
            sa.Column("last_test_error", sa.Text(), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["created_by"],
                ["users.id"],
                name=op.f("fk_integration_connections_created_by_users"),
                ondelete="SET NULL",
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_integration_connections_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["service_key"],
                ["catalog_services.key"],
                name=op.f("fk_integration_connections_service_key_catalog_services"),
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_integration_connections")),
            sa.UniqueConstraint("org_id", "id", name="uq_integration_connections_org_id_id"),
            sa.UniqueConstraint("org_id", "name", name=op.f("uq_integration_connections_org_id_name")),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    created.append(
        op.create_table(
            "invitations",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("email", postgresql.CITEXT(), nullable=False),
            sa.Column("role", sa.String(length=20), nullable=False),
            sa.Column("invited_by", sa.UUID(), nullable=True),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint("role IN ('owner', 'admin', 'member')", name=op.f("ck_invitations_role")),
            sa.ForeignKeyConstraint(
                ["invited_by"],
                ["users.id"],
                name=op.f("fk_invitations_invited_by_users"),
                ondelete="SET NULL",
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_invitations_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
            sa.UniqueConstraint("org_id", "id", name="uq_invitations_org_id_id"),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    op.create_index("ix_invitations_org_id_email", "invitations", ["org_id", "email"], unique=False)
    created.append(
        op.create_table(
            "leads",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("email", postgresql.CITEXT(), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=True),
            sa.Column("company", sa.String(length=200), nullable=True),
            sa.Column("status", sa.String(length=20), server_default="new", nullable=False),
            sa.Column("source", sa.String(length=100), nullable=True),
            sa.Column("assigned_staff_id", sa.UUID(), nullable=True),
            sa.Column("last_inquiry_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint(
                "status IN ('new', 'contacted', 'qualified', 'won', 'lost')", name=op.f("ck_leads_status")
            ),
            sa.ForeignKeyConstraint(
                ["assigned_staff_id"],
                ["staff_users.id"],
                name=op.f("fk_leads_assigned_staff_id_staff_users"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
            sa.UniqueConstraint("email", name=op.f("uq_leads_email")),
            info={"service": "marketing"},
        )
    )
    op.create_index("ix_leads_created_at", "leads", ["created_at"], unique=False)
    op.create_index("ix_leads_status_created_at", "leads", ["status", "created_at"], unique=False)
    created.append(
        op.create_table(
            "memberships",
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("user_id", sa.UUID(), nullable=False),
            sa.Column("role", sa.String(length=20), nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint("role IN ('owner', 'admin', 'member')", name=op.f("ck_memberships_role")),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_memberships_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("org_id", "user_id", name=op.f("pk_memberships")),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"], unique=False)
    created.append(
        op.create_table(
            "system_settings",
            sa.Column("key", sa.String(length=100), nullable=False),
            sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
            sa.Column("description", sa.Text(), nullable=True),
            sa.Column("updated_by", sa.UUID(), nullable=True),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["updated_by"],
                ["staff_users.id"],
                name=op.f("fk_system_settings_updated_by_staff_users"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("key", name=op.f("pk_system_settings")),
            info={"service": "admin", "readers": ["core", "marketing"]},
        )
    )
    created.append(
        op.create_table(
            "workflows",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("description", sa.Text(), nullable=True),
            sa.Column("current_version", sa.Integer(), nullable=True),
            sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
            sa.Column("created_by", sa.UUID(), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["created_by"], ["users.id"], name=op.f("fk_workflows_created_by_users"), ondelete="SET NULL"
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_workflows_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
            sa.UniqueConstraint("org_id", "id", name="uq_workflows_org_id_id"),
            sa.UniqueConstraint("org_id", "name", name=op.f("uq_workflows_org_id_name")),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    created.append(
        op.create_table(
            "email_outbox",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("to_address", sa.String(length=320), nullable=False),
            sa.Column("subject", sa.String(length=300), nullable=False),
            sa.Column("body_text", sa.Text(), nullable=False),
            sa.Column("body_html", sa.Text(), nullable=True),
            sa.Column(
                "headers", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
            ),
            sa.Column("category", sa.String(length=40), nullable=False),
            sa.Column("dedupe_key", sa.String(length=200), nullable=True),
            sa.Column("campaign_id", sa.UUID(), nullable=True),
            sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
            sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
            sa.Column(
                "next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint(
                "status IN ('pending', 'sending', 'sent', 'failed')", name=op.f("ck_email_outbox_status")
            ),
            sa.ForeignKeyConstraint(
                ["campaign_id"],
                ["campaigns.id"],
                name=op.f("fk_email_outbox_campaign_id_campaigns"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_email_outbox")),
            sa.UniqueConstraint("dedupe_key", name=op.f("uq_email_outbox_dedupe_key")),
            info={"service": "marketing", "inserters": ["core"]},
        )
    )
    op.create_index(
        "ix_email_outbox_due",
        "email_outbox",
        ["next_attempt_at"],
        unique=False,
        postgresql_where="status = 'pending'",
    )
    op.create_index(
        "ix_email_outbox_status_created_at", "email_outbox", ["status", "created_at"], unique=False
    )
    created.append(
        op.create_table(
            "endpoints",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("method", sa.String(length=10), nullable=False),
            sa.Column("path", sa.String(length=300), nullable=False),
            sa.Column("workflow_id", sa.UUID(), nullable=False),
            sa.Column("pinned_version", sa.Integer(), nullable=True),
            sa.Column("auth", sa.String(length=20), server_default="api_key", nullable=False),
            sa.Column("request_schema", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
            sa.Column("description", sa.Text(), nullable=True),
            sa.Column("is_enabled", sa.Boolean(), server_default="true", nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.CheckConstraint("auth IN ('public', 'api_key')", name=op.f("ck_endpoints_auth")),
            sa.ForeignKeyConstraint(
                ["org_id", "workflow_id"],
                ["workflows.org_id", "workflows.id"],
                name=op.f("fk_endpoints_org_id_workflows"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_endpoints_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoints")),
            sa.UniqueConstraint("org_id", "id", name="uq_endpoints_org_id_id"),
            sa.UniqueConstraint("org_id", "method", "path", name=op.f("uq_endpoints_org_id_method_path")),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    created.append(
        op.create_table(
            "lead_inquiries",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("lead_id", sa.UUID(), nullable=False),
            sa.Column("message", sa.Text(), nullable=True),
            sa.Column("source", sa.String(length=100), nullable=True),
            sa.Column("utm", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
            sa.Column("address", postgresql.INET(), nullable=True),
            sa.Column("user_agent", sa.String(length=500), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["lead_id"], ["leads.id"], name=op.f("fk_lead_inquiries_lead_id_leads"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_inquiries")),
            info={"service": "marketing"},
        )
    )
    op.create_index("ix_lead_inquiries_lead_id", "lead_inquiries", ["lead_id"], unique=False)
    created.append(
        op.create_table(
            "lead_notes",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("lead_id", sa.UUID(), nullable=False),
            sa.Column("staff_id", sa.UUID(), nullable=True),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["lead_id"], ["leads.id"], name=op.f("fk_lead_notes_lead_id_leads"), ondelete="CASCADE"
            ),
            sa.ForeignKeyConstraint(
                ["staff_id"],
                ["staff_users.id"],
                name=op.f("fk_lead_notes_staff_id_staff_users"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_notes")),
            info={"service": "admin"},
        )
    )
    op.create_index("ix_lead_notes_lead_id", "lead_notes", ["lead_id"], unique=False)
    created.append(
        op.create_table(
            "subscriptions",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("stripe_subscription_id", sa.String(length=255), nullable=False),
            sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
            sa.Column("organization_id", sa.UUID(), nullable=True),
            sa.Column("lead_id", sa.UUID(), nullable=True),
            sa.Column("customer_email", sa.String(length=320), nullable=True),
            sa.Column("plan", sa.String(length=40), nullable=False),
            sa.Column("status", sa.String(length=40), nullable=False),
            sa.Column("stripe_price_id", sa.String(length=255), nullable=True),
            sa.Column("quantity", sa.Integer(), server_default="1", nullable=False),
            sa.Column("unit_amount", sa.BigInteger(), server_default="0", nullable=False),
            sa.Column("currency", sa.String(length=3), server_default="usd", nullable=False),
            sa.Column("interval", sa.String(length=10), server_default="month", nullable=False),
            sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
            sa.Column("cancel_at_period_end", sa.Boolean(), server_default="false", nullable=False),
            sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("stripe_event_watermark", sa.BigInteger(), server_default="0", nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column(
                "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["lead_id"], ["leads.id"], name=op.f("fk_subscriptions_lead_id_leads"), ondelete="SET NULL"
            ),
            sa.ForeignKeyConstraint(
                ["organization_id"],
                ["organizations.id"],
                name=op.f("fk_subscriptions_organization_id_organizations"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
            sa.UniqueConstraint(
                "stripe_subscription_id", name=op.f("uq_subscriptions_stripe_subscription_id")
            ),
            info={"service": "marketing"},
        )
    )
    op.create_index("ix_subscriptions_organization_id", "subscriptions", ["organization_id"], unique=False)
    op.create_index("ix_subscriptions_status", "subscriptions", ["status"], unique=False)
    created.append(
        op.create_table(
            "workflow_versions",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("workflow_id", sa.UUID(), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
            sa.Column("note", sa.String(length=500), nullable=True),
            sa.Column("created_by", sa.UUID(), nullable=True),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["created_by"],
                ["users.id"],
                name=op.f("fk_workflow_versions_created_by_users"),
                ondelete="SET NULL",
            ),
            sa.ForeignKeyConstraint(
                ["org_id", "workflow_id"],
                ["workflows.org_id", "workflows.id"],
                name=op.f("fk_workflow_versions_org_id_workflows"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_workflow_versions_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_versions")),
            sa.UniqueConstraint("org_id", "id", name="uq_workflow_versions_org_id_id"),
            sa.UniqueConstraint(
                "org_id",
                "workflow_id",
                "version",
                name=op.f("uq_workflow_versions_org_id_workflow_id_version"),
            ),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    created.append(
        op.create_table(
            "workflow_runs",
            sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("workflow_id", sa.UUID(), nullable=False),
            sa.Column("version_id", sa.UUID(), nullable=False),
            sa.Column("trigger", sa.String(length=20), nullable=False),
            sa.Column("status", sa.String(length=20), server_default="queued", nullable=False),
            sa.Column("idempotency_key", sa.String(length=200), nullable=True),
            sa.Column("rerun_of", sa.UUID(), nullable=True),
            sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
            sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column(
                "queued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("duration_ms", sa.Integer(), nullable=True),
            sa.CheckConstraint(
                "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
                name=op.f("ck_workflow_runs_status"),
            ),
            sa.ForeignKeyConstraint(
                ["org_id", "version_id"],
                ["workflow_versions.org_id", "workflow_versions.id"],
                name=op.f("fk_workflow_runs_org_id_workflow_versions"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["org_id", "workflow_id"],
                ["workflows.org_id", "workflows.id"],
                name=op.f("fk_workflow_runs_org_id_workflows"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_workflow_runs_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_runs")),
            sa.UniqueConstraint("org_id", "id", name="uq_workflow_runs_org_id_id"),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    op.create_index(
        "ix_workflow_runs_org_id_queued_at", "workflow_runs", ["org_id", "queued_at"], unique=False
    )
    op.create_index(
        "ix_workflow_runs_org_id_workflow_id_queued_at",
        "workflow_runs",
        ["org_id", "workflow_id", "queued_at"],
        unique=False,
    )
    op.create_index(
        "uq_workflow_runs_idempotency",
        "workflow_runs",
        ["org_id", "workflow_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    created.append(
        op.create_table(
            "step_runs",
            sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
            sa.Column("org_id", sa.UUID(), nullable=False),
            sa.Column("run_id", sa.UUID(), nullable=False),
            sa.Column("step_id", sa.String(length=100), nullable=False),
            sa.Column("step_type", sa.String(length=40), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
            sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
            sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column(
                "started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
            ),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(
                ["org_id", "run_id"],
                ["workflow_runs.org_id", "workflow_runs.id"],
                name=op.f("fk_step_runs_org_id_workflow_runs"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["org_id"],
                ["organizations.id"],
                name=op.f("fk_step_runs_org_id_organizations"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_step_runs")),
            info={"service": "core", "tenant_column": "org_id"},
        )
    )
    op.create_index(
        "ix_step_runs_org_id_run_id_position", "step_runs", ["org_id", "run_id", "position"], unique=False
    )
    for statement in database_access_sql():
        op.execute(statement)
    # Each table's grants and row-level security follow from the info it was created with.
    for table in created:
        for statement in secure_table_sql(table.name, access_of(table)):
            op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_step_runs_org_id_run_id_position", table_name="step_runs")
    op.drop_table("step_runs")
    op.drop_index(
        "uq_workflow_runs_idempotency",
        table_name="workflow_runs",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index("ix_workflow_runs_org_id_workflow_id_queued_at", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_org_id_queued_at", table_name="workflow_runs")
    op.drop_table("workflow_runs")
    op.drop_table("workflow_versions")
    op.drop_index("ix_subscriptions_status", table_name="subscriptions")
    op.drop_index("ix_subscriptions_organization_id", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ix_lead_notes_lead_id", table_name="lead_notes")
    op.drop_table("lead_notes")
    op.drop_index("ix_lead_inquiries_lead_id", table_name="lead_inquiries")
    op.drop_table("lead_inquiries")
    op.drop_table("endpoints")
    op.drop_index("ix_email_outbox_status_created_at", table_name="email_outbox")
    op.drop_index("ix_email_outbox_due", table_name="email_outbox", postgresql_where="status = 'pending'")
    op.drop_table("email_outbox")
    op.drop_table("workflows")
    op.drop_table("system_settings")
    op.drop_index("ix_memberships_user_id", table_name="memberships")
    op.drop_table("memberships")
    op.drop_index("ix_leads_status_created_at", table_name="leads")
    op.drop_index("ix_leads_created_at", table_name="leads")
    op.drop_table("leads")
    op.drop_index("ix_invitations_org_id_email", table_name="invitations")
    op.drop_table("invitations")
    op.drop_table("integration_connections")
    op.drop_table("campaigns")
    op.drop_table("api_keys")
    op.drop_table("users")
    op.drop_index(
        "ix_stripe_events_pending", table_name="stripe_events", postgresql_where="processed_at IS NULL"
    )
    op.drop_table("stripe_events")
    op.drop_table("staff_users")
    op.drop_table("organizations")
    op.drop_index("ix_newsletter_subscribers_status", table_name="newsletter_subscribers")
    op.drop_table("newsletter_subscribers")
    op.drop_table("email_templates")
    op.drop_table("catalog_services")
    op.drop_index("ix_blog_posts_status_published_at", table_name="blog_posts")
    op.drop_table("blog_posts")
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.execute("DROP EXTENSION IF EXISTS citext")
