"""Bad input on every route of admin (tests/fuzz.py), signed in as a superadmin through the real
sign-in and TOTP forms: no answer is a 5xx, nothing refused is stored, and no over-long value
reaches the database."""

from __future__ import annotations

import uuid

import pytest

from nectar.admin.app import create_app
from nectar.shared.config import Service
from nectar.shared.database import db
from tests.admin.conftest import ADMIN_TOKEN, StaffBrowser
from tests.fuzz import Fuzz, Principal


@pytest.fixture(scope="module")
def admin_app(settings_for, core_url):
    # One trusted proxy hop: each fuzzed request brings its own address, so no throttle hides a view.
    app = create_app(
        settings_for(
            Service.ADMIN, CORE_ADMIN_TOKEN=ADMIN_TOKEN, CORE_API_URL=core_url, TRUSTED_PROXY_HOPS="1"
        )
    )
    yield app
    with app.app_context():
        db.engine.dispose()


def _one(conn, sql: str, *params) -> str:
    return str(conn.execute(sql, params).fetchone()[0])


@pytest.fixture(scope="module")
def variables(database):
    """One row of everything an admin address can name (the organization and user are there to be
    suspended and deactivated by the fuzz)."""
    tag = uuid.uuid4().hex[:8]
    with database.server.connect_as_superuser(database.name) as conn:
        org = _one(
            conn,
            "INSERT INTO organizations (name, slug) VALUES (%s, %s) RETURNING id",
            f"Fuzz {tag}",
            f"fuzz-{tag}",
        )
        user = _one(
            conn,
            "INSERT INTO users (email, display_name) VALUES (%s, 'Fuzz') RETURNING id",
            f"fuzz-{tag}@example.com",
        )
        conn.execute("INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'owner')", (org, user))
        template = _one(
            conn,
            "INSERT INTO email_templates (key, name, subject, body_markdown) VALUES (%s, 'Fuzz', 'Fuzz', '{content}') "
            "RETURNING id",
            f"fuzz-{tag}",
        )
        return {
            "org_id": org,
            "name": "calls_per_minute",  # a plan override's
            "user_id": user,
            "template_id": template,
            "campaign_id": _one(
                conn,
                "INSERT INTO campaigns (name, subject, body_markdown, template_id) VALUES ('Fuzz', 'Fuzz', 'Hi', %s) "
                "RETURNING id",
                template,
            ),
            "post_id": _one(
                conn,
                "INSERT INTO blog_posts (slug, title, body_markdown) VALUES (%s, 'Fuzz', 'Text') RETURNING id",
                f"fuzz-{tag}",
            ),
            "lead_id": _one(
                conn, "INSERT INTO leads (email) VALUES (%s) RETURNING id", f"lead-{tag}@example.com"
            ),
            "message_id": _one(
                conn,
                "INSERT INTO email_outbox (to_address, subject, body_text, category, status) "
                "VALUES (%s, 'Fuzz', 'Text', 'welcome', 'failed') RETURNING id",
                f"mail-{tag}@example.com",
            ),
            "subscription_id": _one(
                conn,
                "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, organization_id, plan, status) "
                "VALUES (%s, 'cus_fuzz', %s, 'pro', 'active') RETURNING id",
                f"sub_{tag}",
                org,
            ),
            "key": "fuzz_setting",
        }


def test_bad_input_on_any_route_is_refused_without_a_5xx_and_nothing_is_stored(
    admin_app, staff_member, variables, database
):
    staff = StaffBrowser(admin_app, token_page="/login")

    def sign_in():
        # A new superadmin each time: a TOTP code is accepted once, and the fuzz may disable TOTP.
        response = staff.sign_in(*staff_member("superadmin"))
        assert response.status_code == 302, response.get_data(as_text=True)

    signed_in = Principal(
        staff.client,
        token_page="/users/new",
        still_in=lambda: staff.get("/").status_code == 200,
        sign_in=sign_in,
    )
    sign_in()
    fuzz = Fuzz(admin_app, value_for=lambda rule, name: variables[name], principal_for=lambda rule: signed_in)
    fuzz.check(database)
