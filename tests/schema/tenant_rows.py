"""One valid row per tenant table, for tests that attack row-level security.

`ROW_BUILDERS` must cover every tenant table: the isolation tests fail when the schema gains a
tenant table without a builder here, so a new table is attacked from the day it exists.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg

RowBuilder = Callable[[psycopg.Connection, uuid.UUID, dict], uuid.UUID | int | str]


def _insert(conn: psycopg.Connection, sql: str, params: tuple) -> uuid.UUID | int:
    return conn.execute(sql, params).fetchone()[0]


def organization(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO organizations (id, name, slug) VALUES (%s, %s, %s) RETURNING id",
        (org, f"Org {org.hex[:6]}", f"org-{org.hex}"),
    )


def membership(conn, org, parents):
    conn.execute(
        "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'member')", (org, parents["user"])
    )
    return parents["user"]


def invitation(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO invitations (org_id, email, role, expires_at) "
        "VALUES (%s, %s, 'member', now() + interval '1 day') RETURNING id",
        (org, f"{uuid.uuid4().hex[:8]}@example.com"),
    )


def api_key(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO api_keys (org_id, name, prefix, key_hash) VALUES (%s, 'key', 'nsk_test', %s) RETURNING id",
        (org, uuid.uuid4().hex),
    )


def workflow(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO workflows (org_id, name, current_version) VALUES (%s, %s, 1) RETURNING id",
        (org, f"wf-{uuid.uuid4().hex[:8]}"),
    )


def workflow_version(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) "
        "VALUES (%s, %s, %s, '{}') RETURNING id",
        (org, parents["workflow"], uuid.uuid4().int % 1_000_000 + 2),
    )


def workflow_run(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO workflow_runs (org_id, workflow_id, version_id, trigger) "
        "VALUES (%s, %s, %s, 'manual') RETURNING id",
        (org, parents["workflow"], parents["version"]),
    )


def workflow_run_checkpoint(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO workflow_run_checkpoints (org_id, run_id, step_key, status) "
        "VALUES (%s, %s, %s, 'succeeded') RETURNING step_key",
        (org, parents["run"], f"step_{uuid.uuid4().hex[:8]}"),
    )


def workflow_run_event(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO workflow_run_events (org_id, run_id, name, payload, source) "
        "VALUES (%s, %s, 'paid', '{}', 'api') RETURNING id",
        (org, parents["run"]),
    )


def workflow_approval(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO workflow_approvals (org_id, run_id, step_key, step_id, title, approver_role, expires_at) "
        "VALUES (%s, %s, %s, 'ok', 'Go?', 'admin', now() + interval '1 day') RETURNING id",
        (org, parents["run"], f"ok_{uuid.uuid4().hex[:8]}"),
    )


def endpoint(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO endpoints (org_id, method, path, workflow_id) VALUES (%s, 'GET', %s, %s) RETURNING id",
        (org, f"/things/{uuid.uuid4().hex[:8]}", parents["workflow"]),
    )


def integration_connection(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO integration_connections (org_id, service_key, name) VALUES (%s, 'rest', %s) RETURNING id",
        (org, f"conn-{uuid.uuid4().hex[:8]}"),
    )


def imported_connector(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO imported_connectors (org_id, name, title, base_url, document, operations, document_bytes) "
        "VALUES (%s, %s, 'API', 'https://api.example.com', '{}', '{}', 2) RETURNING id",
        (org, f"api-{uuid.uuid4().hex[:8]}"),
    )


def email_suppression(conn, org, parents):
    conn.execute(
        "INSERT INTO email_suppressions (org_id, address) VALUES (%s, %s)",
        (org, f"{uuid.uuid4().hex[:8]}@example.com"),
    )
    return org


def alert_rule(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO alert_rules (org_id, name, workflow_id, channel, target) "
        "VALUES (%s, %s, %s, 'email', 'oncall@example.com') RETURNING id",
        (org, f"rule-{uuid.uuid4().hex[:8]}", parents["workflow"]),
    )


def usage_day(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO usage_daily (org_id, day, trigger, shard, runs) "
        "VALUES (%s, current_date, %s, 0, 1) RETURNING trigger",
        (org, f"t{uuid.uuid4().hex[:10]}"),
    )


def organization_variable(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO organization_variables (org_id, name, value) VALUES (%s, %s, 'v') RETURNING name",
        (org, f"V_{uuid.uuid4().hex[:10].upper()}"),
    )


def organization_secret(conn, org, parents):
    return _insert(
        conn,
        "INSERT INTO organization_secrets (org_id, name, value_ciphertext, key_id) "
        "VALUES (%s, %s, 'not really encrypted', 'test') RETURNING name",
        (org, f"S_{uuid.uuid4().hex[:10].upper()}"),
    )


ROW_BUILDERS: dict[str, RowBuilder] = {
    "organizations": organization,
    "memberships": membership,
    "invitations": invitation,
    "api_keys": api_key,
    "workflows": workflow,
    "workflow_versions": workflow_version,
    "workflow_runs": workflow_run,
    "workflow_run_checkpoints": workflow_run_checkpoint,
    "workflow_run_events": workflow_run_event,
    "workflow_approvals": workflow_approval,
    "endpoints": endpoint,
    "integration_connections": integration_connection,
    "imported_connectors": imported_connector,
    "email_suppressions": email_suppression,
    "alert_rules": alert_rule,
    "usage_daily": usage_day,
    "organization_variables": organization_variable,
    "organization_secrets": organization_secret,
}


def seed_tenant(conn: psycopg.Connection, org: uuid.UUID) -> dict:
    """Seeds one row of every tenant table for `org` (on a connection that bypasses RLS) and returns
    the parent ids a builder needs to add more rows for that organization."""
    parents: dict = {}
    organization(conn, org, parents)
    parents["user"] = _insert(
        conn, "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{org.hex[:12]}@example.com",)
    )
    membership(conn, org, parents)
    parents["workflow"] = workflow(conn, org, parents)
    parents["version"] = _insert(
        conn,
        "INSERT INTO workflow_versions (org_id, workflow_id, version, definition) VALUES (%s, %s, 1, '{}') RETURNING id",
        (org, parents["workflow"]),
    )
    parents["run"] = workflow_run(conn, org, parents)
    for table in (
        "invitations",
        "api_keys",
        "endpoints",
        "integration_connections",
        "imported_connectors",
        "workflow_run_checkpoints",
        "email_suppressions",
        "workflow_run_events",
        "workflow_approvals",
        "alert_rules",
        "usage_daily",
        "organization_variables",
        "organization_secrets",
    ):
        if (
            conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
        ):  # seeding an older revision
            ROW_BUILDERS[table](conn, org, parents)
    return parents


def ensure_catalog(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO catalog_services (key, name, description, config_schema, credentials_schema) "
        "VALUES ('rest', 'REST API', 'Any HTTP API', '{}', '{}') ON CONFLICT (key) DO NOTHING"
    )
