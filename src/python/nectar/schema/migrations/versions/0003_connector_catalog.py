"""Connector catalog: the templates organizations configure integration connections from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_URL = {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2000}
CATALOG = [
    {
        "key": "rest",
        "name": "REST API",
        "description": "Any HTTP API. Steps call paths relative to its base URL, authenticated with a bearer token, basic auth or an API-key header.",
        "config_schema": {
            "type": "object",
            "required": ["base_url", "auth"],
            "additionalProperties": False,
            "properties": {
                "base_url": _URL,
                "auth": {"enum": ["none", "bearer", "basic", "api_key"]},
                "api_key_header": {"type": "string", "maxLength": 100},
                "health_path": {"type": "string", "maxLength": 500},
            },
        },
        "credentials_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "token": {"type": "string", "maxLength": 4000},
                "username": {"type": "string", "maxLength": 200},
                "password": {"type": "string", "maxLength": 1000},
                "api_key": {"type": "string", "maxLength": 4000},
            },
        },
    },
    {
        "key": "webhook",
        "name": "Incoming webhook",
        "description": "Lets another system start a workflow by POSTing to a URL, signed with a shared secret (HMAC-SHA256 of the body in X-Nectar-Signature).",
        "config_schema": {
            "type": "object",
            "required": ["workflow_id"],
            "additionalProperties": False,
            "properties": {"workflow_id": {"type": "string", "format": "uuid"}},
        },
        "credentials_schema": {
            "type": "object",
            "required": ["secret"],
            "additionalProperties": False,
            "properties": {"secret": {"type": "string", "minLength": 16, "maxLength": 200}},
        },
    },
    {
        "key": "smtp",
        "name": "SMTP email",
        "description": "Your own mail server, for send_email steps that should not go through Nectar Studio's.",
        "config_schema": {
            "type": "object",
            "required": ["host", "port"],
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string", "maxLength": 255},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "starttls": {"type": "boolean"},
                "from_address": {"type": "string", "maxLength": 320},
            },
        },
        "credentials_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "username": {"type": "string", "maxLength": 320},
                "password": {"type": "string", "maxLength": 1000},
            },
        },
    },
    {
        "key": "slack",
        "name": "Slack incoming webhook",
        "description": "Posts messages to a Slack channel through an incoming-webhook URL.",
        "config_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"channel_label": {"type": "string", "maxLength": 100}},
        },
        "credentials_schema": {
            "type": "object",
            "required": ["webhook_url"],
            "additionalProperties": False,
            "properties": {"webhook_url": {**_URL, "pattern": "^https://"}},
        },
    },
]


def upgrade() -> None:
    catalog = sa.table(
        "catalog_services",
        sa.column("key", sa.String),
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("config_schema", sa.JSON),
        sa.column("credentials_schema", sa.JSON),
    )
    op.bulk_insert(catalog, [{**entry} for entry in json.loads(json.dumps(CATALOG))])


def downgrade() -> None:
    op.execute(
        "DELETE FROM integration_connections WHERE service_key IN ('rest', 'webhook', 'smtp', 'slack')"
    )
    op.execute("DELETE FROM catalog_services WHERE key IN ('rest', 'webhook', 'smtp', 'slack')")
