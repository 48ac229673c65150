"""Admin's forms state the limits its server holds (tests/forms.py walks each page's forms)."""

from __future__ import annotations

import uuid

from nectar.shared.config import Role
from tests.forms import form_limit_problems


def test_the_back_offices_forms_say_their_limits_and_the_server_holds_them(staff_browser, database):
    marker = uuid.uuid4().hex[:8]
    org_id, user_id = uuid.uuid4(), uuid.uuid4()
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, slug) VALUES (%s, %s, %s)",
            (org_id, f"Org {marker}", marker),
        )
        conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user_id, f"u-{marker}@example.com"))
        lead_id = conn.execute(
            "INSERT INTO leads (email, name) VALUES (%s, 'Lead') RETURNING id", (f"l-{marker}@example.com",)
        ).fetchone()[0]
    staff = staff_browser("superadmin")
    pages = [
        "/users/new",
        f"/users/{user_id}/edit",
        f"/orgs/{org_id}",
        f"/leads/{lead_id}",
        "/content/posts/new",
        "/content/templates/new",
        "/content/campaigns/new",
        "/system",
        "/account",
    ]
    problems = []
    for path in pages:
        problems += form_limit_problems(staff, path)
    assert not problems, "\n".join(problems)
