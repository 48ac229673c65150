"""Users in admin: an exact list across organizations (search, filters, sort, pages, capped total),
and every change made through core's contract against a real core served over HTTP: the person can
then set a password from core's email and sign in to core. Each write leaves one audit row."""

from __future__ import annotations

import re
import threading
import time
import uuid
from contextlib import ExitStack

import pytest

from nectar.admin.app import create_app
from nectar.shared.config import Role, Service
from tests.admin.conftest import ADMIN_TOKEN
from tests.core.conftest import PASSWORD, link_in, unique_email
from tests.core.conftest import Browser as CoreBrowser
from tests.serving import dead_url, served

ROW_LINK = re.compile(r'<td><a href="/users/([0-9a-f-]{36})">([^<]+)</a></td>')


def _listed(page) -> list[str]:
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    return [email for _id, email in ROW_LINK.findall(page.get_data(as_text=True))]


@pytest.fixture(scope="module")
def seeded(database):
    """60 users marked with one word, in three organizations (30, 20, 10); every 7th deactivated,
    every even one confirmed. Returns the marker, the orgs and each user's facts."""
    marker = f"m{uuid.uuid4().hex[:8]}"
    orgs = [(uuid.uuid4(), f"{marker}-{name}") for name in ("a", "b", "c")]
    people = []
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for org_id, slug in orgs:
            conn.execute(
                "INSERT INTO organizations (id, name, slug) VALUES (%s, %s, %s)", (org_id, slug.upper(), slug)
            )
        for i in range(60):
            org_index = 0 if i < 30 else 1 if i < 50 else 2
            person = {
                "email": f"{marker}-{i:02d}@example.com",
                "active": i % 7 != 0,
                "verified": i % 2 == 0,
                "org": orgs[org_index][0],
            }
            user_id = conn.execute(
                "INSERT INTO users (email, display_name, is_active, email_verified_at, created_at) "
                "VALUES (%s, %s, %s, CASE WHEN %s THEN now() END, now() - make_interval(mins => %s)) RETURNING id",
                (person["email"], f"Person {i:02d}", person["active"], person["verified"], 60 - i),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO memberships (org_id, user_id, role) VALUES (%s, %s, 'member')",
                (person["org"], user_id),
            )
            people.append(person)
    return marker, orgs, people


def test_the_list_searches_pages_and_counts_exactly(staff_browser, seeded):
    marker, _orgs, people = seeded
    staff = staff_browser("read_only")
    first = staff.get(f"/users?q={marker}")
    emails = _listed(first)
    assert len(emails) == 50
    assert "1–50 of 60" in first.get_data(as_text=True)
    # Newest first by default: the seeded creation times count down with the index.
    assert emails[0] == people[-1]["email"]
    second = staff.get(f"/users?q={marker}&page=2")
    assert len(_listed(second)) == 10 and "51–60 of 60" in second.get_data(as_text=True)
    assert set(emails) | set(_listed(second)) == {p["email"] for p in people}
    assert 'rel="next"' in first.get_data(as_text=True) and 'rel="next"' not in second.get_data(as_text=True)
    # Past the last page: nothing listed, and the total is still counted.
    beyond = staff.get(f"/users?q={marker}&page=3")
    assert _listed(beyond) == [] and "Nothing on this page (of 60)" in beyond.get_data(as_text=True)
    # Names are searched too.
    assert _listed(staff.get(f"/users?q={marker}&sort=email")) == sorted(p["email"] for p in people)[:50]


def test_filters_match_the_seeded_truth(staff_browser, seeded):
    marker, orgs, people = seeded
    staff = staff_browser("support")

    def listed(query: str) -> set[str]:
        found = set()
        for page in (1, 2):
            found |= set(_listed(staff.get(f"/users?q={marker}&{query}&page={page}")))
        return found

    assert listed("status=inactive") == {p["email"] for p in people if not p["active"]}
    assert listed("status=active") == {p["email"] for p in people if p["active"]}
    assert listed("verified=yes") == {p["email"] for p in people if p["verified"]}
    assert listed("verified=no&status=active") == {
        p["email"] for p in people if not p["verified"] and p["active"]
    }
    assert listed(f"org={orgs[0][0]}") == {p["email"] for p in people if p["org"] == orgs[0][0]}
    assert listed(f"org={orgs[1][1]}") == {p["email"] for p in people if p["org"] == orgs[1][0]}, "by slug"
    unknown = staff.get(f"/users?q={marker}&org=no-such-org")
    assert _listed(unknown) == [] and "No organization has the id or slug" in unknown.get_data(as_text=True)


def test_sorting_is_whitelisted_and_bad_arguments_fall_back(staff_browser, seeded):
    marker, _orgs, people = seeded
    staff = staff_browser("support")
    emails = sorted(p["email"] for p in people)
    assert _listed(staff.get(f"/users?q={marker}&sort=-email"))[:3] == emails[::-1][:3]
    fallback = _listed(staff.get(f"/users?q={marker}&sort=password_hash&page=abc"))
    assert fallback[0] == people[-1]["email"], "an unknown sort key gives the default order"
    assert (
        _listed(staff.get(f"/users?q={marker}&page=999999")) == []
    ), "a page past the end is empty, not an error"


def test_the_total_is_capped_instead_of_counting_everything(staff_browser, database):
    marker = f"bulk{uuid.uuid4().hex[:6]}"
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email) SELECT %s || '-' || n || '@example.com' FROM generate_series(1, 10050) AS n",
            (marker,),
        )
    page = staff_browser("read_only").get(f"/users?q={marker}")
    assert "1–50 of 10,000+" in page.get_data(as_text=True)


def test_a_user_created_in_admin_sets_a_password_from_the_email_and_signs_in_to_core(
    staff_browser, core_app, audit_rows, outbox_to, database
):
    staff = staff_browser("support")
    email = unique_email()
    before = len(audit_rows())
    form = {"email": email, "display_name": "Made By Staff", "request_id": str(uuid.uuid4())}
    created = staff.post("/users/new", form)
    assert created.status_code == 302, created.get_data(as_text=True)
    user_id = created.headers["Location"].rsplit("/", 1)[1]
    detail = staff.get(f"/users/{user_id}").get_data(as_text=True)
    assert email in detail and "Made By Staff" in detail and "not yet" in detail

    rows = audit_rows()[before:]
    assert [(r["action"], r["target"], r["actor"]) for r in rows] == [
        ("user.created", f"user:{user_id}", staff.email)
    ]
    assert rows[0]["after"]["email"] == email and rows[0]["address"] == "127.0.0.1"
    assert rows[0]["after"]["outcome"] == "created"

    # The same form again (a double submit): the same account, no second one; the second request is
    # recorded too (staff asked), as a replay of the first.
    again = staff.post("/users/new", form)
    assert again.headers["Location"] == f"/users/{user_id}"
    rows = audit_rows()[before:]
    assert [(r["action"], r["target"], r["after"]["outcome"]) for r in rows] == [
        ("user.created", f"user:{user_id}", "created"),
        ("user.created", f"user:{user_id}", "replayed"),
    ]
    with database.connect(Role.ADMIN) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email = %s", (email,)).fetchone()[0] == 1

    person = CoreBrowser(core_app)
    link = link_in(outbox_to(email, "account.set_password"))
    assert person.post(link, {"password": PASSWORD, "confirm": PASSWORD}).status_code == 302
    signed_in = person.sign_in(email)
    assert signed_in.status_code == 302 and "/login" not in signed_in.headers["Location"]


def test_core_refusals_show_next_to_the_field_and_change_nothing(staff_browser, core_app, audit_rows):
    existing = CoreBrowser(core_app).sign_up()
    staff = staff_browser("support")
    before = len(audit_rows())
    taken = staff.post("/users/new", {"email": existing.upper(), "request_id": str(uuid.uuid4())})
    assert taken.status_code == 422
    page = taken.get_data(as_text=True)
    assert re.search(r'class="field-error" role="alert">An account with this email already exists', page)
    bad = staff.post("/users/new", {"email": "not-an-address", "request_id": str(uuid.uuid4())})
    assert bad.status_code == 422 and "field-error" in bad.get_data(as_text=True)
    assert 'value="not-an-address"' in bad.get_data(as_text=True), "the input is kept"
    assert len(audit_rows()) == before


def test_when_core_is_down_admin_says_so_and_keeps_the_input(
    settings_for, staff_member, database, audit_rows
):
    from tests.admin.conftest import StaffBrowser

    app = create_app(settings_for(Service.ADMIN, CORE_ADMIN_TOKEN=ADMIN_TOKEN, CORE_API_URL=dead_url()))
    try:
        email, password, _ = staff_member("support")
        staff = StaffBrowser(app)
        assert staff.sign_in(email, password).status_code == 302
        before = len(audit_rows())
        wanted = unique_email()
        answer = staff.post(
            "/users/new", {"email": wanted, "display_name": "Kept", "request_id": str(uuid.uuid4())}
        )
        assert answer.status_code == 503
        page = answer.get_data(as_text=True)
        assert "Core did not answer, so nothing was changed" in page
        assert f'value="{wanted}"' in page and 'value="Kept"' in page
        assert len(audit_rows()) == before
        with database.connect(Role.ADMIN) as conn:
            assert conn.execute("SELECT count(*) FROM users WHERE email = %s", (wanted,)).fetchone()[0] == 0
    finally:
        from nectar.shared.database import db

        with app.app_context():
            db.engine.dispose()


def _user_id(database, email) -> str:
    with database.connect(Role.ADMIN) as conn:
        return str(conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()[0])


def test_editing_changes_core_with_its_rules_and_records_before_and_after(
    staff_browser, core_app, audit_rows, database, outbox_to
):
    email = CoreBrowser(core_app).sign_up(name="Old Name")
    other = CoreBrowser(core_app).sign_up()
    user_id = _user_id(database, email)
    staff = staff_browser("support")
    form = staff.get(f"/users/{user_id}/edit").get_data(as_text=True)
    assert f'value="{email}"' in form and 'value="Old Name"' in form

    before = len(audit_rows())
    taken = staff.post(f"/users/{user_id}/edit", {"email": other, "display_name": "New Name"})
    assert taken.status_code == 422 and "already exists" in taken.get_data(as_text=True)
    assert len(audit_rows()) == before

    new_email = unique_email()
    saved = staff.post(f"/users/{user_id}/edit", {"email": new_email, "display_name": "New Name"})
    assert saved.status_code == 302
    with database.connect(Role.ADMIN) as conn:
        row = conn.execute(
            "SELECT email, display_name, email_verified_at FROM users WHERE id = %s", (user_id,)
        ).fetchone()
    assert row[:2] == (new_email, "New Name") and row[2] is None, "a new address must be confirmed again"
    assert "verify-email" in outbox_to(new_email, "account.verify")
    rows = audit_rows()[before:]
    assert len(rows) == 1 and rows[0]["action"] == "user.updated"
    assert rows[0]["before"]["email"] == email and rows[0]["after"]["email"] == new_email
    assert rows[0]["before"]["display_name"] == "Old Name" and rows[0]["after"]["display_name"] == "New Name"

    unchanged = staff.post(f"/users/{user_id}/edit", {"email": new_email, "display_name": "New Name"})
    assert unchanged.status_code == 302 and len(audit_rows()) == before + 1, "no change, no row"


def test_deactivating_ends_core_sessions_and_reactivating_lets_them_back(
    staff_browser, core_app, audit_rows, database
):
    customer = CoreBrowser(core_app)
    email = customer.sign_up()
    assert customer.get("/orgs").status_code == 200
    user_id = _user_id(database, email)
    staff = staff_browser("support")

    before = len(audit_rows())
    assert staff.post(f"/users/{user_id}/deactivate").status_code == 302
    assert customer.get("/orgs").status_code == 302, "their core session ended"
    assert CoreBrowser(core_app).sign_in(email).status_code == 401
    assert "deactivated" in staff.get(f"/users/{user_id}").get_data(as_text=True)

    assert staff.post(f"/users/{user_id}/reactivate").status_code == 302
    assert CoreBrowser(core_app).sign_in(email).status_code == 302
    rows = audit_rows()[before:]
    assert [r["action"] for r in rows] == ["user.deactivated", "user.reactivated"]
    assert rows[0]["before"]["is_active"] is True and rows[0]["after"]["is_active"] is False


def test_a_password_reset_email_is_sent_through_core(
    staff_browser, core_app, audit_rows, database, outbox_to
):
    email = CoreBrowser(core_app).sign_up()
    user_id = _user_id(database, email)
    staff = staff_browser("superadmin")
    before = len(audit_rows())
    assert staff.post(f"/users/{user_id}/password-reset").status_code == 302
    assert [r["action"] for r in audit_rows()[before:]] == ["user.password_reset_sent"]
    person = CoreBrowser(core_app)
    new_password = "a brand new password 77"
    link = link_in(outbox_to(email, "account.reset"))
    assert person.post(link, {"password": new_password, "confirm": new_password}).status_code == 302
    assert person.sign_in(email, new_password).status_code == 302

    # A deactivated account gets no reset link: core refuses, admin says why, nothing is recorded.
    staff.post(f"/users/{user_id}/deactivate")
    before = len(audit_rows())
    refused = staff.post(f"/users/{user_id}/password-reset", follow_redirects=True)
    assert "reactivate it before sending a reset link" in refused.get_data(as_text=True)
    assert len(audit_rows()) == before


def test_the_detail_shows_memberships_and_sessions(staff_browser, core_app, database):
    customer = CoreBrowser(core_app)
    email = customer.sign_up()
    customer.create_org(name="Detail Org")
    page = staff_browser("read_only").get(f"/users/{_user_id(database, email)}").get_data(as_text=True)
    assert "Detail Org" in page and ">owner<" in page
    assert "1 signed in, 1 in all" in page
    assert staff_browser("read_only").get(f"/users/{uuid.uuid4()}").status_code == 404


class HeldFirstAnswer:
    """Core behind a gateway that holds its first answer to a path ending in `suffix` until after
    the caller's time-out (core has acted by then), and passes every later request straight on."""

    def __init__(self, app, suffix: str, hold_seconds: float):
        self.app, self.suffix, self.hold_seconds = app, suffix, hold_seconds
        self.held = threading.Event()
        self.calls = 0

    def __call__(self, environ, start_response):
        answer = {}

        def keep(status, headers, exc_info=None):
            answer.update(status=status, headers=headers)
            return lambda _data: None

        result = self.app(environ, keep)
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
        if environ["PATH_INFO"].endswith(self.suffix):
            self.calls += 1
            if not self.held.is_set():
                self.held.set()
                time.sleep(self.hold_seconds)
        start_response(answer["status"], answer["headers"])
        return [body]


@pytest.fixture
def admin_behind_slow_gateway(settings_for, core_app):
    """`make(suffix) -> (admin app, gateway)`: admin calling core through a HeldFirstAnswer gateway,
    with a one-second time-out so the held answer arrives too late."""
    from nectar.core.contract import CoreClient
    from nectar.shared.database import db

    def dispose(app) -> None:
        with app.app_context():
            db.engine.dispose()

    with ExitStack() as stack:

        def make(suffix: str):
            gateway = HeldFirstAnswer(core_app, suffix, hold_seconds=2.0)
            url = stack.enter_context(served(gateway))
            app = create_app(settings_for(Service.ADMIN, CORE_ADMIN_TOKEN=ADMIN_TOKEN, CORE_API_URL=url))
            stack.callback(dispose, app)
            # The client admin would build, with a shorter time-out than the default five seconds.
            app.extensions["nectar_core_client"] = CoreClient(url, ADMIN_TOKEN, timeout=1.0)
            return app, gateway

        yield make


def test_a_create_whose_answer_was_lost_is_retried_and_still_audited(
    admin_behind_slow_gateway, staff_member, audit_rows, database
):
    from tests.admin.conftest import StaffBrowser

    app, gateway = admin_behind_slow_gateway("/internal/v1/users")
    email, password, _ = staff_member("support")
    staff = StaffBrowser(app)
    assert staff.sign_in(email, password).status_code == 302
    before = len(audit_rows())
    wanted = unique_email()
    created = staff.post("/users/new", {"email": wanted, "request_id": str(uuid.uuid4())})
    assert created.status_code == 302, created.get_data(as_text=True)
    # At least one retry: on a loaded machine a replay can outlast the one-second time-out too.
    assert gateway.calls >= 2, "the first answer was lost, a retry got core's replay"
    user_id = created.headers["Location"].rsplit("/", 1)[1]
    with database.connect(Role.ADMIN) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email = %s", (wanted,)).fetchone()[0] == 1
    rows = audit_rows()[before:]
    assert [(r["action"], r["target"]) for r in rows] == [("user.created", f"user:{user_id}")]
    assert rows[0]["after"]["outcome"] == "replayed" and rows[0]["after"]["email"] == wanted


def test_a_password_reset_whose_answer_was_lost_is_not_sent_twice(
    admin_behind_slow_gateway, staff_member, core_app, audit_rows, database
):
    from tests.admin.conftest import StaffBrowser

    customer = CoreBrowser(core_app).sign_up()
    user_id = _user_id(database, customer)
    app, gateway = admin_behind_slow_gateway("/password-reset")
    email, password, secret = staff_member("support")
    staff = StaffBrowser(app)
    assert staff.sign_in(email, password, secret).status_code == 302
    before = len(audit_rows())
    answer = staff.post(f"/users/{user_id}/password-reset", follow_redirects=True)
    assert "admin cannot tell whether the change was made" in answer.get_data(as_text=True)
    assert gateway.calls == 1, "not retried: core may have queued the email already"
    with database.connect(Role.ADMIN) as conn:
        sent = conn.execute(
            "SELECT count(*) FROM email_outbox WHERE to_address = %s AND category = 'account.reset'",
            (customer,),
        ).fetchone()[0]
    assert sent == 1
    assert len(audit_rows()) == before, "nothing is recorded as done when admin cannot tell"
