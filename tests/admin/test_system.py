"""The system page: each service's /readyz over real HTTP (one peer that never answers still lets
the page render, shown down), database, queue and outbox figures; settings edited as validated JSON
by superadmins only, each change audited with before and after and read by the admin worker."""

from __future__ import annotations

import re
import socket
import uuid

import pytest
from sqlalchemy import create_engine

from nectar.admin import jobs
from nectar.admin.app import create_app
from nectar.shared.config import Role, Service
from tests.admin.conftest import ADMIN_TOKEN, StaffBrowser
from tests.serving import served


def _state(page: str, service: str) -> str:
    match = re.search(rf"<td>{service}</td>\s*<td class=\"status-(up|down)\">", page)
    assert match, page
    return match.group(1)


@pytest.fixture
def silent_peer():
    """A port that accepts connections and never answers: the health check must time out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_the_page_renders_with_a_service_down_and_shows_it(
    settings_for, admin_app, core_url, silent_peer, staff_member, database
):
    with served(admin_app) as admin_url:
        app = create_app(
            settings_for(
                Service.ADMIN,
                CORE_ADMIN_TOKEN=ADMIN_TOKEN,
                CORE_API_URL=core_url,
                ADMIN_API_URL=admin_url,
                MARKETING_API_URL=silent_peer,
            )
        )
        try:
            email, password, secret = staff_member("read_only")
            staff = StaffBrowser(app)
            staff.sign_in(email, password, secret)
            page = staff.get("/system")
            assert page.status_code == 200
            text = page.get_data(as_text=True)
        finally:
            from nectar.shared.database import db

            with app.app_context():
                db.engine.dispose()
    assert _state(text, "core") == "up"
    assert _state(text, "admin") == "up"
    assert _state(text, "marketing") == "down"
    assert "no answer (ReadTimeout)" in text
    assert re.search(r"<td>core</td>\s*<td class=\"status-up\">up</td>\s*<td>\d+ ms</td>", text)


def test_database_queue_and_outbox_figures_are_the_real_ones(staff_browser, database):
    queue = f"q{uuid.uuid4().hex[:8]}"
    staff = staff_browser("read_only")  # signed in first: its account and session grow the database too
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for status in ("todo", "todo", "failed"):
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, status) VALUES (%s, 't', %s)",
                (queue, status),
            )
        conn.execute(
            "INSERT INTO email_outbox (to_address, subject, body_text, category, status) "
            "VALUES ('x@example.com', 's', 'b', 'test', 'failed')"
        )
        failed = conn.execute("SELECT count(*) FROM email_outbox WHERE status = 'failed'").fetchone()[0]
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    page = staff.get("/system").get_data(as_text=True)
    assert f"<td>{queue}</td><td>todo</td><td>2</td>" in page
    assert f"<td>{queue}</td><td>failed</td><td>1</td>" in page
    assert f"<td>failed</td><td>{failed}</td>" in page
    assert size in page and "nectar_admin" in page and re.search(r"\d+</span> of \d+ connections", page)


def test_a_superadmin_edits_settings_as_validated_json_and_each_change_is_audited(
    staff_browser, audit_rows, database
):
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("DELETE FROM system_settings WHERE key = 'run_retention_days'")
    staff = staff_browser("superadmin")
    form = staff.get("/system/settings/run_retention_days").get_data(as_text=True)
    assert "How long workflow runs are kept" in form
    before = len(audit_rows())

    for bad, message in (
        ("{not json", "not valid JSON"),
        ('{"days": NaN}', "NaN is not a JSON number"),
        ('{"days": 7, "note": "a\\u0000b"}', "/note holds a NUL character"),
        ('{"days": ' + "[" * 1000 + "]" * 1000 + "}", "deeper than 100 levels"),
        ("[1, 2]", "must be a JSON object"),
        ('{"days": 0}', "from 1 to 3650"),
        ('{"days": "7"}', "from 1 to 3650"),
    ):
        answer = staff.post("/system/settings/run_retention_days", {"value": bad})
        assert answer.status_code == 422 and message in answer.get_data(as_text=True), bad
    assert len(audit_rows()) == before

    assert staff.post("/system/settings/run_retention_days", {"value": '{"days": 7}'}).status_code == 302
    assert staff.post("/system/settings/run_retention_days", {"value": '{ "days": 14 }'}).status_code == 302
    assert (
        staff.post("/system/settings/run_retention_days", {"value": '{"days":14}'}).status_code == 302
    )  # same
    rows = audit_rows()[before:]
    assert [(r["action"], r["before"], r["after"]) for r in rows] == [
        ("system_setting.created", None, {"value": {"days": 7}}),
        ("system_setting.updated", {"value": {"days": 7}}, {"value": {"days": 14}}),
    ]
    assert all(r["actor"] == staff.email and r["target"] == "setting:run_retention_days" for r in rows)

    # The admin worker reads it.
    engine = create_engine(database.url(Role.ADMIN))
    try:
        with engine.connect() as conn:
            assert jobs.run_retention_days(conn) == 14
    finally:
        engine.dispose()

    assert staff.post("/system/settings/run_retention_days/delete").status_code == 302
    assert audit_rows()[-1]["action"] == "system_setting.deleted"
    assert audit_rows()[-1]["before"] == {"value": {"days": 14}}


def test_known_settings_have_their_rules_and_others_need_an_object(staff_browser):
    staff = staff_browser("superadmin")
    flags = staff.post("/system/settings/feature_flags", {"value": '{"new_builder": "yes"}'})
    assert flags.status_code == 422 and "true or false" in flags.get_data(as_text=True)
    limits = staff.post("/system/settings/plan_limits", {"value": '{"gold": {"workflows": 3}}'})
    assert limits.status_code == 422 and "Unknown plan" in limits.get_data(as_text=True)
    assert (
        staff.post("/system/settings/plan_limits", {"value": '{"free": {"workflows": 3}}'}).status_code == 302
    )
    assert staff.post("/system/settings/support_hours", {"value": '{"from": 9, "to": 17}'}).status_code == 302
    page = staff.get("/system").get_data(as_text=True)
    assert '{"free": {"workflows": 3}}' in page and '{"from": 9, "to": 17}' in page
    assert staff.get("/system/settings/Bad-Key").status_code == 404
    opened = staff.get("/system/settings?key=feature_flags")
    assert opened.headers["Location"] == "/system/settings/feature_flags"


def test_a_setting_key_or_flag_name_with_a_trailing_newline_is_refused(staff_browser, database, audit_rows):
    staff = staff_browser("superadmin")
    before = len(audit_rows())
    assert staff.get("/system/settings/support_hours%0A").status_code == 404
    assert staff.post("/system/settings/support_hours%0A", {"value": '{"from": 9}'}).status_code == 404
    flags = staff.post("/system/settings/feature_flags", {"value": '{"new_builder\\n": true}'})
    assert flags.status_code == 422 and "true or false" in flags.get_data(as_text=True)
    with database.connect(Role.ADMIN) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM system_settings WHERE key LIKE %s", ("%" + "\n",)
        ).fetchone()
    assert stored == (0,)
    assert len(audit_rows()) == before


def test_queue_and_outbox_figures_are_counted_up_to_a_cap(staff_browser, database):
    queue = f"q{uuid.uuid4().hex[:8]}"
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
            "SELECT %s, 't', 'todo' FROM generate_series(1, 10001)",
            (queue,),
        )
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status) VALUES (%s, 't', 'succeeded')",
            (queue,),
        )
    page = staff_browser("read_only").get("/system").get_data(as_text=True)
    assert f"<td>{queue}</td><td>todo</td><td>10,000+</td>" in page
    assert f"<td>{queue}</td><td>succeeded</td>" not in page, "finished jobs are not counted"
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs WHERE queue_name = %s", (queue,))
