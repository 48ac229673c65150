"""The newsletter: double opt-in (a GET never confirms), one-click unsubscribe without cookies or
CSRF (RFC 8058), resubscribe, clear pages for bad links, and no way to tell who is subscribed."""

from __future__ import annotations

import re
import time
import uuid

import itsdangerous
import pytest

from nectar.marketing.contract.campaigns import unsubscribe_token


def _email(tag="reader") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def _status(admin_db, email):
    row = admin_db.execute(
        "SELECT status, confirmed_at IS NOT NULL, unsubscribed_at IS NOT NULL FROM newsletter_subscribers WHERE email = %s",
        (email,),
    ).fetchone()
    return row[0] if row else None


def _mails(admin_db, email, category=None):
    rows = admin_db.execute(
        "SELECT category, subject, body_text, body_html, headers FROM email_outbox WHERE to_address = %s "
        "ORDER BY created_at",
        (email,),
    ).fetchall()
    return [row for row in rows if category is None or row[0] == category]


def _path(url: str, marketing_app) -> str:
    base = marketing_app.config["NECTAR_SETTINGS"].public_url
    assert url.startswith(base)
    return url[len(base) :]


def _confirm_link(admin_db, email, marketing_app) -> str:
    body = _mails(admin_db, email, "newsletter.confirm")[-1][2]
    return _path(re.search(r"(http\S+/newsletter/confirm/\S+)", body).group(1), marketing_app)


def _sign_up(browser, email, source="newsletter"):
    return browser.post("/newsletter", {"email": email, "source": source})


def _subscribe_and_confirm(browser, admin_db, email, marketing_app):
    assert _sign_up(browser, email).status_code == 302
    assert browser.post(_confirm_link(admin_db, email, marketing_app)).status_code == 200
    assert _status(admin_db, email) == "confirmed"


def test_signing_up_makes_a_pending_subscriber_and_emails_a_confirmation_link(
    browser, admin_db, marketing_app
):
    email = _email()
    response = _sign_up(browser, email, source="landing")
    assert response.status_code == 302 and response.headers["Location"].endswith(
        "/newsletter/check-your-inbox"
    )
    assert "Check your inbox" in browser.get("/newsletter/check-your-inbox").get_data(as_text=True)
    assert _status(admin_db, email) == "pending"
    assert (
        admin_db.execute("SELECT source FROM newsletter_subscribers WHERE email = %s", (email,)).fetchone()[0]
        == "landing"
    )
    [(category, subject, body, _html, headers)] = _mails(admin_db, email)
    assert category == "newsletter.confirm" and "Confirm your subscription" in subject
    assert "/newsletter/confirm/" in body and headers == {}


def test_opening_the_link_does_not_confirm_pressing_the_button_does(browser, admin_db, marketing_app):
    email = _email()
    _sign_up(browser, email)
    link = _confirm_link(admin_db, email, marketing_app)
    # A mail scanner or a preview fetches the link: nothing happens.
    for _ in range(2):
        page = browser.get(link)
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert email in html and "Yes, subscribe me" in html and 'method="post"' in html
    assert _status(admin_db, email) == "pending"
    assert _mails(admin_db, email, "newsletter.welcome") == []

    confirmed = browser.post(link)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.get_data(as_text=True)
    assert _status(admin_db, email) == "confirmed"
    [(_c, subject, body, html, headers)] = _mails(admin_db, email, "newsletter.welcome")
    assert "Welcome" in subject
    unsubscribe = re.search(r"Unsubscribe: (\S+)", body).group(1)
    assert "/newsletter/unsubscribe/" in unsubscribe and f'href="{unsubscribe}"' in html
    assert headers == {
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }

    # Pressing it twice changes nothing and sends no second welcome.
    assert browser.post(link).status_code == 200
    assert len(_mails(admin_db, email, "newsletter.welcome")) == 1


def test_confirming_needs_the_csrf_token(marketing_app, browser, admin_db):
    email = _email()
    _sign_up(browser, email)
    link = _confirm_link(admin_db, email, marketing_app)
    response = marketing_app.test_client().post(link)
    assert response.status_code == 400
    assert _status(admin_db, email) == "pending"


def test_staff_written_welcome_template_is_used(browser, admin_db, marketing_app):
    admin_db.execute(
        "INSERT INTO email_templates (key, name, subject, body_markdown) VALUES ('newsletter_welcome', 'Welcome', "
        "'Hello from the team', 'Thanks for **joining**.') ON CONFLICT (key) DO UPDATE SET subject = excluded.subject, "
        "body_markdown = excluded.body_markdown"
    )
    try:
        email = _email()
        _subscribe_and_confirm(browser, admin_db, email, marketing_app)
        [(_c, subject, body, html, _h)] = _mails(admin_db, email, "newsletter.welcome")
        assert subject == "Hello from the team"
        assert "<strong>joining</strong>" in html and "Unsubscribe:" in body
    finally:
        admin_db.execute("DELETE FROM email_templates WHERE key = 'newsletter_welcome'")


@pytest.mark.parametrize(
    ("make_link", "message"),
    [
        (lambda app, email: "/newsletter/confirm/garbage", "This link is not valid"),
        (
            lambda app, email: "/newsletter/confirm/" + unsubscribe_token(app.secret_key, email),
            "This link is not valid",
        ),
        (lambda app, email: "/newsletter/unsubscribe/garbage", "This link is not valid"),
        (
            lambda app, email: "/newsletter/unsubscribe/" + unsubscribe_token("another-key", email),
            "This link is not valid",
        ),
    ],
)
def test_bad_links_get_a_clear_page(browser, marketing_app, make_link, message):
    link = make_link(marketing_app, _email())
    for response in (browser.get(link), browser.post(link)):
        assert response.status_code == 400
        html = response.get_data(as_text=True)
        assert "This link cannot be used" in html and message in html


def test_an_expired_confirmation_link_says_so(browser, admin_db, marketing_app, monkeypatch):
    email = _email()
    eight_days_ago = int(time.time()) - 8 * 24 * 3600
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: eight_days_ago)
    _sign_up(browser, email)
    monkeypatch.undo()
    link = _confirm_link(admin_db, email, marketing_app)
    for response in (browser.get(link), browser.post(link)):
        assert response.status_code == 400
        assert "This link has expired" in response.get_data(as_text=True)
    assert _status(admin_db, email) == "pending"


def test_signing_up_again_while_pending_resends_the_link_within_a_limit(browser, admin_db):
    email = _email()
    for _ in range(3):
        assert _sign_up(browser, email).status_code == 302
    assert len(_mails(admin_db, email, "newsletter.confirm")) == 3
    refused = _sign_up(browser, email)
    assert refused.status_code == 429
    assert "several requests for this email address" in refused.get_data(as_text=True)
    assert len(_mails(admin_db, email, "newsletter.confirm")) == 3


def test_a_subscriber_cannot_be_told_apart_from_a_stranger(browser, admin_db, marketing_app):
    confirmed = _email("known")
    _subscribe_and_confirm(browser, admin_db, confirmed, marketing_app)
    mails_before = len(_mails(admin_db, confirmed))
    stranger = _email("stranger")
    answers = [_sign_up(browser, address) for address in (confirmed, stranger)]
    assert [a.status_code for a in answers] == [302, 302]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]
    assert _status(admin_db, confirmed) == "confirmed"
    assert len(_mails(admin_db, confirmed)) == mails_before  # nothing sent to an address already subscribed


def test_invalid_signups_are_refused_next_to_the_field(browser, admin_db):
    for value, message in [
        ("", "Enter your email address."),
        ("nope", "Enter an email address like name@example.com."),
        ("zoë@example.com", "accented or non-Latin letters before the @"),
    ]:
        response = browser.post("/newsletter", {"email": value})
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        assert re.search(rf'<div class="field has-error">.*?{re.escape(message)}', html, re.S)
    assert (
        admin_db.execute(
            "SELECT count(*) FROM newsletter_subscribers WHERE email IN ('nope', 'zoë@example.com')"
        ).fetchone()[0]
        == 0
    )


def test_one_click_unsubscribe_works_without_cookies_or_csrf(marketing_app, browser, admin_db):
    email = _email()
    _subscribe_and_confirm(browser, admin_db, email, marketing_app)
    welcome = _mails(admin_db, email, "newsletter.welcome")[0]
    url = welcome[4]["List-Unsubscribe"].strip("<>")
    mail_client = marketing_app.test_client(use_cookies=False)
    response = mail_client.post(
        _path(url, marketing_app),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert _status(admin_db, email) == "unsubscribed"
    # Sent again (a retrying mail client): still fine.
    assert mail_client.post(_path(url, marketing_app), data="List-Unsubscribe=One-Click").status_code == 200


def test_the_unsubscribe_link_shows_a_button_and_the_page_offers_to_resubscribe(
    browser, admin_db, marketing_app
):
    email = _email()
    _subscribe_and_confirm(browser, admin_db, email, marketing_app)
    body = _mails(admin_db, email, "newsletter.welcome")[0][2]
    link = _path(re.search(r"Unsubscribe: (\S+)", body).group(1), marketing_app)
    page = browser.get(link)
    assert page.status_code == 200 and "Stop sending the Nectar Studio newsletter" in page.get_data(
        as_text=True
    )
    assert _status(admin_db, email) == "confirmed"  # a GET changes nothing

    done = browser.post(link)
    assert done.status_code == 200
    html = done.get_data(as_text=True)
    assert "You are unsubscribed" in html and "Subscribe again" in html
    assert _status(admin_db, email) == "unsubscribed"
    old_confirm_link = _confirm_link(admin_db, email, marketing_app)
    stale = browser.post(old_confirm_link)
    assert stale.status_code == 400 and "no longer valid" in stale.get_data(as_text=True)

    resubscribe = re.search(r'action="([^"]+/resubscribe/[^"]+)"', html).group(1)
    again = browser.post(resubscribe)
    assert again.status_code == 302 and again.headers["Location"].endswith("/newsletter/check-your-inbox")
    assert _status(admin_db, email) == "pending"  # confirmation first, again
    assert len(_mails(admin_db, email, "newsletter.confirm")) == 2
    assert browser.post(_confirm_link(admin_db, email, marketing_app)).status_code == 200
    assert _status(admin_db, email) == "confirmed"
    assert len(_mails(admin_db, email, "newsletter.welcome")) == 2


def test_resubscribing_needs_the_csrf_token(marketing_app, admin_db):
    email = _email()
    token = unsubscribe_token(marketing_app.secret_key, email)
    response = marketing_app.test_client().post(f"/newsletter/resubscribe/{token}")
    assert response.status_code == 400
    assert _status(admin_db, email) is None
