"""The email outbox in admin: lists by status with search, one message in full, and retrying a failed
message, which marketing's real sender then delivers to a real SMTP server on loopback."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine

from nectar.marketing.email.outbox import flush
from nectar.shared.config import Role, load_smtp_settings
from tests.marketing.mailserver import MailServer


@pytest.fixture
def tag():
    return uuid.uuid4().hex[:10]


def add_message(
    database, to, *, status="pending", category="welcome", attempts=0, last_error=None, headers=None
):
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        return conn.execute(
            "INSERT INTO email_outbox (to_address, subject, body_text, body_html, headers, category, status, attempts, "
            "last_error, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now() + interval '1 day') RETURNING id",
            (to, f"Hello {to}", "Plain <text> body", "<p>Hi <b>there</b></p>", json.dumps(headers or {}), category,
             status, attempts, last_error),  # fmt: skip
        ).fetchone()[0]


def message_row(database, message_id):
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(
            "SELECT status, attempts, next_attempt_at <= now(), last_error FROM email_outbox WHERE id = %s",
            (message_id,),
        ).fetchone()


def listed(browser, **args) -> set[str]:
    import re

    page = browser.get("/outbox/", query_string=args).get_data(as_text=True)
    return set(re.findall(r'<a href="/outbox/[0-9a-f-]+">([^<]+)</a>', page))


def test_list_by_status_and_search(database, staff_browser, tag):
    add_message(database, f"a-{tag}@example.com", status="pending", category=f"welcome-{tag}")
    add_message(database, f"b-{tag}@example.com", status="sent", category="campaign")
    add_message(database, f"c-{tag}@example.com", status="failed", category=f"reset-{tag}")
    add_message(database, f"d-{tag}@example.com", status="sending", category="campaign")
    browser = staff_browser("read_only")
    assert listed(browser, q=tag) == {f"{x}-{tag}@example.com" for x in "abcd"}
    assert listed(browser, q=tag, status="failed") == {f"c-{tag}@example.com"}
    assert listed(browser, q=tag, status="sent") == {f"b-{tag}@example.com"}
    assert listed(browser, q=f"reset-{tag}") == {f"c-{tag}@example.com"}  # by category
    assert listed(browser, q=f"a-{tag}@") == {f"a-{tag}@example.com"}  # by address
    assert listed(browser, q=tag, status="bogus") == listed(
        browser, q=tag
    )  # an unknown status filters nothing
    assert listed(browser, q=f"_{tag}") == set()  # _ is a literal underscore, not a wildcard


def test_detail_shows_headers_body_error_and_attempts(database, staff_browser, tag):
    message_id = add_message(
        database, f"e-{tag}@example.com", status="failed", attempts=8, last_error="SMTP 550 <no such user>",
        headers={"List-Unsubscribe": "<https://m.test/u/1>", "X-Campaign": "spring"},
    )  # fmt: skip
    page = staff_browser("read_only").get(f"/outbox/{message_id}").get_data(as_text=True)
    assert "SMTP 550 &lt;no such user&gt;" in page
    assert "<tr><th>Attempts</th><td>8</td></tr>" in page
    assert "List-Unsubscribe" in page and "&lt;https://m.test/u/1&gt;" in page and "X-Campaign" in page
    assert "Plain &lt;text&gt; body" in page
    # Sandboxed (no scripts, no forms); its links open in a tab of their own.
    assert (
        'sandbox="allow-popups allow-popups-to-escape-sandbox" '
        'srcdoc="<base target=&quot;_blank&quot;>&lt;p&gt;Hi &lt;b&gt;there&lt;/b&gt;&lt;/p&gt;"'
    ) in page
    assert "Retry this message" not in page  # read-only staff see no write buttons
    missing = staff_browser("support").get(f"/outbox/{uuid.uuid4()}")
    assert missing.status_code == 404 and "There is no such message." in missing.get_data(as_text=True)


def test_links_in_a_message_can_be_opened(database, staff_browser, tag):
    link = "https://core.test/reset-password?token=a.b&x=1"
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        message_id = conn.execute(
            "INSERT INTO email_outbox (to_address, subject, body_text, category) VALUES (%s, 'Links', %s, 'test') "
            "RETURNING id",
            (f"l-{tag}@example.com", f"Choose a password <here>:\n\n{link}.\n"),
        ).fetchone()[0]
    page = staff_browser("read_only").get(f"/outbox/{message_id}").get_data(as_text=True)
    escaped = link.replace("&", "&amp;")
    text = page.split('id="mail-text">')[1].split("</pre>")[0]
    assert text == f'Choose a password &lt;here&gt;:\n\n<a href="{escaped}">{escaped}</a>.\n'


def test_retry_hands_a_failed_message_back_to_the_sender(database, staff_browser, audit_rows, tag):
    address = f"retry-{tag}@example.com"
    message_id = add_message(database, address, status="failed", attempts=8, last_error="SMTP 451 try later")
    server = MailServer().start()
    engine = create_engine(database.url(Role.MARKETING))
    try:
        smtp = load_smtp_settings(server.environ())
        # Failed is final: marketing's sender leaves it alone, even long after.
        flush(engine, smtp, now=datetime.now(UTC) + timedelta(days=2))
        assert server.to(address) == []

        browser = staff_browser("support")
        before = len(audit_rows())
        assert "Retry this message" in browser.get(f"/outbox/{message_id}").get_data(as_text=True)
        response = browser.post(f"/outbox/{message_id}/retry", {})
        assert response.status_code == 302
        # Pending, due now, a fresh set of attempts: what the sender claims.
        assert message_row(database, message_id) == ("pending", 0, True, "SMTP 451 try later")
        rows = audit_rows()[before:]
        assert [r["action"] for r in rows] == ["outbox.retry"]
        assert rows[0]["target"] == f"email:{message_id}" and rows[0]["actor"] == browser.email
        assert rows[0]["before"] == {"status": "failed", "attempts": 8, "last_error": "SMTP 451 try later"}

        flush(engine, smtp)
        delivered = server.to(address)
        assert len(delivered) == 1 and delivered[0].message["Subject"] == f"Hello {address}"
        assert message_row(database, message_id)[:2] == ("sent", 1)

        # Only a failed message can be retried: nothing changes, nothing is recorded.
        response = browser.post(f"/outbox/{message_id}/retry", {}, follow_redirects=True)
        assert "Only a failed message can be retried; this one is sent." in response.get_data(as_text=True)
        assert len(audit_rows()) == before + 1
        assert browser.post(f"/outbox/{uuid.uuid4()}/retry", {}).status_code == 404
    finally:
        server.stop()
        engine.dispose()


def test_read_only_staff_cannot_retry(database, staff_browser, audit_rows, tag):
    message_id = add_message(database, f"ro-{tag}@example.com", status="failed", attempts=3)
    reader = staff_browser("read_only")
    before = len(audit_rows())
    assert reader.post(f"/outbox/{message_id}/retry", {}).status_code == 403
    assert message_row(database, message_id)[:2] == ("failed", 3)
    assert len(audit_rows()) == before


def test_a_visitor_without_a_staff_session_sees_nothing(admin_app, database, tag):
    message_id = add_message(database, f"anon-{tag}@example.com", status="failed")
    client = admin_app.test_client()
    for path in ("/outbox/", f"/outbox/{message_id}"):
        assert client.get(path).status_code == 302, path
    assert client.post(f"/outbox/{message_id}/retry").status_code in (302, 401)
    assert message_row(database, message_id)[0] == "failed"
