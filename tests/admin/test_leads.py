"""Leads (CRM) through admin's pages: search and filters, detail with every inquiry, pipeline stages and
board, notes, assignment, and the CSV export. Each write is audited once; read-only staff may look
but not change anything."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from nectar.shared.config import Role


@pytest.fixture
def tag():
    """A word only this test's leads carry, so searches ignore other tests' rows in the database."""
    return f"t{uuid.uuid4().hex[:12]}"


def add_lead(
    database, email, *, name=None, company=None, status="new", source=None, created_at=None, inquiries=()
):
    """Stores a lead as marketing would (as nectar_marketing), with its inquiries; returns its id."""
    with database.connect(Role.MARKETING, autocommit=True) as conn:
        lead_id = conn.execute(
            "INSERT INTO leads (email, name, company, status, source, created_at, last_inquiry_at) "
            "VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()), coalesce(%s, now())) RETURNING id",
            (email, name, company, status, source, created_at, created_at),
        ).fetchone()[0]
        for inquiry in inquiries:
            conn.execute(
                "INSERT INTO lead_inquiries (lead_id, message, source, utm, address, user_agent, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    lead_id,
                    inquiry["message"],
                    inquiry.get("source"),
                    json.dumps(inquiry.get("utm", {})),
                    inquiry.get("address"),
                    inquiry.get("user_agent"),
                    inquiry["at"],
                ),
            )
    return lead_id


def lead_row(database, lead_id):
    with database.connect(Role.ADMIN) as conn:
        cursor = conn.execute("SELECT status, assigned_staff_id FROM leads WHERE id = %s", (lead_id,))
        return cursor.fetchone()


def emails_on(page_html: str, tag: str) -> list[str]:
    return re.findall(rf">([^<>]*{tag}[^<>]*@[^<>]+)</a>", page_html)


def test_list_searches_and_filters(database, staff_browser, tag):
    now = datetime.now(UTC)
    add_lead(
        database,
        f"ann-{tag}@one.example",
        name="Ann Archer",
        company="Acme",
        source="pricing",
        created_at=now - timedelta(days=10),
    )
    add_lead(
        database,
        f"bob-{tag}@two.example",
        name=f"Bob {tag}",
        company="Globex",
        status="contacted",
        source="blog",
        created_at=now - timedelta(days=5),
    )
    add_lead(
        database,
        f"cid-{tag}@three.example",
        name="Cid",
        company=f"Initech {tag}",
        status="won",
        source="Pricing",
        created_at=now - timedelta(days=1),
    )
    browser = staff_browser("support")

    def listed(**args):
        response = browser.get("/leads/", query_string={"q": tag, **args})
        assert response.status_code == 200, response.get_data(as_text=True)
        return sorted(email.split("-")[0] for email in emails_on(response.get_data(as_text=True), tag))

    # The tag is in the email of all three, Bob's name and Initech's company name.
    assert listed() == ["ann", "bob", "cid"]
    assert listed(stage="contacted") == ["bob"]
    assert listed(source="pricing") == ["ann", "cid"]  # sources match whatever their case
    day = lambda delta: (now - timedelta(days=delta)).date().isoformat()  # noqa: E731
    assert listed(created_from=day(6)) == ["bob", "cid"]
    assert listed(created_to=day(5)) == ["ann", "bob"]
    assert listed(created_from=day(5), created_to=day(5)) == ["bob"]
    assert listed(assigned="none") == ["ann", "bob", "cid"]
    response = browser.get("/leads/", query_string={"q": "Initech " + tag})
    assert emails_on(response.get_data(as_text=True), tag) == [f"cid-{tag}@three.example"]
    # Wildcards typed into the search are taken literally.
    assert emails_on(browser.get("/leads/", query_string={"q": f"%{tag}"}).get_data(as_text=True), tag) == []


def test_bad_filters_are_explained_next_to_the_field(staff_browser):
    browser = staff_browser("support")
    response = browser.get("/leads/", query_string={"created_from": "2026-13-45"})
    assert response.status_code == 400
    assert "Not a valid date value" in response.get_data(as_text=True)
    response = browser.get("/leads/", query_string={"created_from": "2026-05-02", "created_to": "2026-05-01"})
    assert response.status_code == 400
    assert "The end date is before the start date." in response.get_data(as_text=True)
    response = browser.get("/leads/", query_string={"stage": "bogus"})
    assert response.status_code == 400
    assert browser.get("/leads/export.csv", query_string={"stage": "bogus"}).status_code == 400


def test_dates_far_out_are_refused_next_to_the_field_and_export_nothing(staff_browser, audit_rows):
    browser = staff_browser("support")
    for name, far in (
        ("created_to", "9999-12-31"),
        ("created_from", "9999-12-31"),
        ("created_from", "1899-01-01"),
    ):
        response = browser.get("/leads/", query_string={name: far})
        assert response.status_code == 400, (name, far)
        page = response.get_data(as_text=True)
        assert re.search(
            r'class="field-error" role="alert">Enter a date from 2000-01-01 to 2100-12-31\.', page
        )
    assert browser.get("/leads/", query_string={"created_to": "2100-12-31"}).status_code == 200

    # The export validates and builds its query before it records anything: a refusal, no audit row.
    before = len(audit_rows("lead.export"))
    refused = browser.get("/leads/export.csv", query_string={"created_to": "9999-12-31"})
    assert refused.status_code == 400 and "2000-01-01 to 2100-12-31" in refused.get_data(as_text=True)
    assert len(audit_rows("lead.export")) == before
    last_day = browser.get("/leads/export.csv", query_string={"created_to": "2100-12-31"})
    assert last_day.status_code == 200 and last_day.get_data(as_text=True).startswith("email,name,")
    assert len(audit_rows("lead.export")) == before + 1


def test_detail_shows_every_inquiry(database, staff_browser, tag):
    first = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    lead_id = add_lead(
        database,
        f"dora-{tag}@example.com",
        name="Dora",
        company="Dora & Co",
        source="contact",
        inquiries=[
            {
                "message": "First <b>question</b>",
                "source": "contact",
                "at": first,
                "address": "203.0.113.9",
                "utm": {"utm_source": "newsletter", "utm_campaign": "spring"},
            },
            {
                "message": "Second question",
                "source": "pricing",
                "at": first + timedelta(days=2),
                "address": "2001:db8::1",
                "user_agent": "Mozilla/5.0 test",
            },
        ],
    )
    page = staff_browser("read_only").get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "First &lt;b&gt;question&lt;/b&gt;" in page  # shown as text, never as markup
    assert "Second question" in page
    assert "2026-03-01 09:30 UTC" in page and "2026-03-03 09:30 UTC" in page
    assert "203.0.113.9" in page and "2001:db8::1" in page
    assert "utm_campaign=spring" in page and "utm_source=newsletter" in page
    assert "Mozilla/5.0 test" in page
    assert page.index("Second question") < page.index("First &lt;b&gt;")  # newest first
    assert "Inquiries (2)" in page
    assert staff_browser("support").get(f"/leads/{uuid.uuid4()}").status_code == 404


def test_pipeline_stage_changes_are_audited(database, staff_browser, audit_rows, tag):
    lead_id = add_lead(database, f"eve-{tag}@example.com")
    browser = staff_browser("support")
    before = len(audit_rows())
    response = browser.post(f"/leads/{lead_id}/stage", {"stage": "qualified", "back": "board"})
    assert response.status_code == 302 and response.headers["Location"] == "/leads/board"
    assert lead_row(database, lead_id)[0] == "qualified"
    rows = audit_rows()
    assert len(rows) == before + 1
    assert rows[-1]["action"] == "lead.stage" and rows[-1]["actor"] == browser.email
    assert rows[-1]["target"] == f"lead:{lead_id}"
    assert rows[-1]["before"] == {"stage": "new"} and rows[-1]["after"] == {"stage": "qualified"}

    # The same stage again, or one that does not exist: nothing changes, nothing is recorded.
    response = browser.post(f"/leads/{lead_id}/stage", {"stage": "qualified"}, follow_redirects=True)
    assert "already qualified" in response.get_data(as_text=True)
    assert browser.post(f"/leads/{lead_id}/stage", {"stage": "bogus"}).status_code == 302
    assert lead_row(database, lead_id)[0] == "qualified"
    assert len(audit_rows()) == before + 1
    assert browser.post(f"/leads/{uuid.uuid4()}/stage", {"stage": "won"}).status_code == 404


def test_board_groups_leads_by_stage_with_counts(database, staff_browser, tag):
    add_lead(database, f"board-{tag}@example.com", name=f"Board {tag}", status="lost")
    browser = staff_browser("support")
    page = browser.get("/leads/board").get_data(as_text=True)
    with database.connect(Role.ADMIN) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM leads GROUP BY status").fetchall())
    for stage in ("new", "contacted", "qualified", "won", "lost"):
        assert (
            f'id="stage-{stage}">{stage.capitalize()} <span class="count">{counts.get(stage, 0):,}</span>'
            in page
        )
    lost_column = page[page.index('id="stage-lost"') :]
    assert f"Board {tag}" in lost_column


def test_notes_and_assignment(database, staff_browser, staff_member, audit_rows, tag):
    lead_id = add_lead(database, f"fay-{tag}@example.com")
    browser = staff_browser("support")
    owner_email, _, _ = staff_member("support")
    reader_email, _, _ = staff_member("read_only")
    with database.connect(Role.ADMIN) as conn:
        owner_id = conn.execute("SELECT id FROM staff_users WHERE email = %s", (owner_email,)).fetchone()[0]
        reader_id = conn.execute("SELECT id FROM staff_users WHERE email = %s", (reader_email,)).fetchone()[0]
    before = len(audit_rows())

    response = browser.post(f"/leads/{lead_id}/notes", {"body": "Called; wants a demo =SUM(A1)"})
    assert response.status_code == 302
    response = browser.post(f"/leads/{lead_id}/assign", {"staff_id": str(owner_id)})
    assert response.status_code == 302
    assert lead_row(database, lead_id)[1] == owner_id
    rows = audit_rows()[before:]
    assert [row["action"] for row in rows] == ["lead.note", "lead.assign"]
    assert rows[0]["after"]["body"] == "Called; wants a demo =SUM(A1)"
    assert rows[1]["before"] == {"assigned_to": None} and rows[1]["after"] == {"assigned_to": owner_email}

    page = browser.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "Called; wants a demo =SUM(A1)" in page and browser.email in page
    listed = browser.get("/leads/", query_string={"q": tag, "assigned": str(owner_id)}).get_data(as_text=True)
    assert emails_on(listed, tag) == [f"fay-{tag}@example.com"]

    # An empty note, a read-only owner, an unknown staff id: refused with a reason, nothing stored.
    response = browser.post(f"/leads/{lead_id}/notes", {"body": "   "})
    assert response.status_code == 422 and "Write something in the note." in response.get_data(as_text=True)
    response = browser.post(f"/leads/{lead_id}/assign", {"staff_id": str(reader_id)}, follow_redirects=True)
    assert "Choose an active staff member" in response.get_data(as_text=True)
    browser.post(f"/leads/{lead_id}/assign", {"staff_id": str(uuid.uuid4())})
    assert lead_row(database, lead_id)[1] == owner_id
    assert len(audit_rows()) == before + 2

    # Unassigning is a write too.
    browser.post(f"/leads/{lead_id}/assign", {"staff_id": ""})
    assert lead_row(database, lead_id)[1] is None
    assert audit_rows()[-1]["after"] == {"assigned_to": None}


def test_read_only_staff_cannot_change_leads(database, staff_browser, audit_rows, tag):
    lead_id = add_lead(database, f"gil-{tag}@example.com")
    browser = staff_browser("read_only")
    before = len(audit_rows())
    page = browser.get(f"/leads/{lead_id}").get_data(as_text=True)
    assert "Change stage" not in page and "Add note" not in page
    for path, data in (
        (f"/leads/{lead_id}/stage", {"stage": "won"}),
        (f"/leads/{lead_id}/notes", {"body": "hi"}),
        (f"/leads/{lead_id}/assign", {"staff_id": ""}),
    ):
        assert browser.post(path, data).status_code == 403, path
    assert lead_row(database, lead_id) == ("new", None)
    assert len(audit_rows()) == before


def test_csv_export_is_filtered_streamed_and_safe(database, staff_browser, audit_rows, tag):
    add_lead(
        database,
        f"=cmd-{tag}@example.com",
        name='=HYPERLINK("http://evil")',
        company="+1 Corp",
        source="@ads",
    )
    add_lead(database, f"plain-{tag}@example.com", name="-minus", company="Tab\tCo", status="won")
    add_lead(
        database,
        f"quote-{tag}@example.com",
        name='Quote "me", please',
        company="Normal",
        status="won",
        source="blog",
    )
    browser = staff_browser("read_only")  # exporting reads; read-only staff may do it
    before = len(audit_rows())
    response = browser.get("/leads/export.csv", query_string={"q": tag})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == "attachment; filename=leads.csv"
    assert response.is_streamed
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == [
        "email",
        "name",
        "company",
        "stage",
        "source",
        "assigned_to",
        "created_at",
        "last_inquiry_at",
    ]
    by_stage = {row[0]: row for row in rows[1:]}
    assert set(by_stage) == {
        f"'=cmd-{tag}@example.com",
        f"plain-{tag}@example.com",
        f"quote-{tag}@example.com",
    }
    dangerous = by_stage[f"'=cmd-{tag}@example.com"]
    assert dangerous[1:5] == ['\'=HYPERLINK("http://evil")', "'+1 Corp", "new", "'@ads"]
    assert by_stage[f"plain-{tag}@example.com"][1:3] == ["'-minus", "Tab\tCo"]
    assert by_stage[f"quote-{tag}@example.com"][1] == 'Quote "me", please'  # quoted, not broken
    datetime.fromisoformat(dangerous[6])

    # The list's export link carries every filter of the list, and the export is recorded with them.
    today = datetime.now(UTC).date().isoformat()
    filters = {"q": tag, "stage": "won", "source": "blog", "created_from": today, "created_to": today}
    listing = browser.get("/leads/", query_string=filters).get_data(as_text=True)
    link = (
        re.search(r'<a href="(/leads/export\.csv\?[^"]+)" download>', listing).group(1).replace("&amp;", "&")
    )
    rows = list(csv.reader(io.StringIO(browser.get(link).get_data(as_text=True))))
    assert [row[0] for row in rows[1:]] == [f"quote-{tag}@example.com"]
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    rows = list(csv.reader(io.StringIO(browser.get(link.replace(today, yesterday)).get_data(as_text=True))))
    assert rows[1:] == []  # the dates count
    exports = audit_rows()[before:]
    assert [row["action"] for row in exports] == ["lead.export"] * 3
    assert exports[1]["after"] == {"filters": filters}


def test_a_visitor_without_a_staff_session_sees_nothing(admin_app, database, tag):
    lead_id = add_lead(database, f"hal-{tag}@example.com")
    client = admin_app.test_client()
    for path in ("/leads/", "/leads/board", f"/leads/{lead_id}", "/leads/export.csv"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path
    assert client.post(f"/leads/{lead_id}/stage", data={"stage": "won"}).status_code in (302, 401)
    assert lead_row(database, lead_id)[0] == "new"
