"""The contact form: what it stores, what it refuses (with the reason next to the field), and its
spam defences (honeypot, rate limits, CSRF)."""

from __future__ import annotations

import re
import uuid

import pytest

from nectar.shared.config import Role


def _email(tag="lead") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def _form(email, **overrides):
    data = {"name": "Ada Lovelace", "email": email, "company": "Analytical Ltd",
            "message": "We want to automate our invoicing.", "source": "contact"}  # fmt: skip
    data.update(overrides)
    return data


def _lead(admin_db, email):
    return admin_db.execute(
        "SELECT id, email, name, company, source, status, last_inquiry_at FROM leads WHERE email = %s",
        (email,),
    ).fetchone()


def _inquiries(admin_db, email):
    return admin_db.execute(
        "SELECT i.message, i.source, i.utm, host(i.address), i.user_agent FROM lead_inquiries i "
        "JOIN leads l ON l.id = i.lead_id WHERE l.email = %s ORDER BY i.created_at",
        (email,),
    ).fetchall()


def _outbox(admin_db, email):
    return admin_db.execute(
        "SELECT subject, body_text, category FROM email_outbox WHERE lower(to_address) = lower(%s)", (email,)
    ).fetchall()


def _hidden(html, name):
    return re.search(rf'name="{name}" type="hidden" value="([^"]*)"', html).group(1)


def test_utm_parameters_and_source_from_the_link_fill_the_hidden_fields(browser):
    html = browser.get(
        "/contact?source=pricing&utm_source=newsletter&utm_medium=email&utm_campaign=spring"
        "&utm_term=api&utm_content=cta"
    ).get_data(as_text=True)
    assert _hidden(html, "source") == "pricing"
    assert _hidden(html, "utm_source") == "newsletter"
    assert _hidden(html, "utm_medium") == "email"
    assert _hidden(html, "utm_campaign") == "spring"
    assert _hidden(html, "utm_term") == "api"
    assert _hidden(html, "utm_content") == "cta"


def test_a_submission_stores_the_lead_its_inquiry_and_queues_a_confirmation(browser, admin_db):
    email = _email()
    response = browser.post(
        "/contact",
        _form(email, source="pricing", utm_source="newsletter", utm_campaign="spring", utm_medium=""),
        headers={"User-Agent": "TestBrowser/1.0"},
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/contact/thanks")
    thanks = browser.get("/contact/thanks").get_data(as_text=True)
    assert "your message is on its way" in thanks
    lead = _lead(admin_db, email)
    assert lead[2:6] == ("Ada Lovelace", "Analytical Ltd", "pricing", "new")
    assert lead[6] is not None
    [(message, source, utm, address, agent)] = _inquiries(admin_db, email)
    assert message == "We want to automate our invoicing."
    assert source == "pricing"
    assert utm == {"utm_source": "newsletter", "utm_campaign": "spring"}
    assert address == "127.0.0.1" and agent == "TestBrowser/1.0"
    [(subject, body, category)] = _outbox(admin_db, email)
    assert category == "lead.confirmation" and "received your message" in subject
    assert "Ada" not in body and "invoicing" not in body  # nothing typed is relayed to the typed-in address


def test_the_confirmation_relays_nothing_the_visitor_typed(browser, admin_db):
    # Someone types a victim's address and a link as their name: we must not mail it for them.
    victim = _email("victim")
    name = "Claim your prize at https://evil.example/win now"
    company = "Visit https://evil.example/co"
    response = browser.post(
        "/contact", _form(victim, name=name, company=company, message="https://evil.example/m")
    )
    assert response.status_code == 302
    queued = admin_db.execute(
        "SELECT subject, body_text, coalesce(body_html, ''), headers::text FROM email_outbox WHERE to_address = %s",
        (victim,),
    ).fetchall()
    assert len(queued) == 1
    for part in queued[0]:
        assert "evil.example" not in part and "prize" not in part
    assert _lead(admin_db, victim)[2] == name  # stored for sales all the same


def test_an_address_in_another_script_after_the_at_is_kept_in_its_ascii_form(browser, admin_db):
    local = f"lead-{uuid.uuid4().hex[:8]}"
    assert browser.post("/contact", _form(f"{local}@Bücher.example")).status_code == 302
    ascii_address = f"{local}@xn--bcher-kva.example"
    assert _lead(admin_db, ascii_address) is not None
    assert [row[2] for row in _outbox(admin_db, ascii_address)] == ["lead.confirmation"]


def test_a_second_inquiry_adds_to_the_same_lead(browser, admin_db):
    email = _email()
    assert browser.post("/contact", _form(email, company="")).status_code == 302
    first = _lead(admin_db, email)
    assert first[3] is None
    response = browser.post(
        "/contact",
        _form(email.upper(), name="Ada L.", company="Engines Inc", message="Also: a demo?", source="blog"),
    )
    assert response.status_code == 302
    assert admin_db.execute("SELECT count(*) FROM leads WHERE email = %s", (email,)).fetchone()[0] == 1
    lead = _lead(admin_db, email)
    assert lead[0] == first[0]
    assert lead[2:5] == ("Ada L.", "Engines Inc", "contact")  # newest details, first source
    assert lead[6] >= first[6]
    assert [row[0] for row in _inquiries(admin_db, email)] == [
        "We want to automate our invoicing.",
        "Also: a demo?",
    ]
    assert len(_outbox(admin_db, email)) == 2


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "Enter an email address like name@example.com."),
        ({"email": "jürgen@example.com"}, "email", "accented or non-Latin letters before the @"),
        ({"email": ""}, "email", "Enter your email address, so we can answer."),
        ({"name": ""}, "name", "Tell us your name."),
        ({"message": "   "}, "message", "Write a few words about what you need."),
        ({"message": "x" * 5001}, "message", "Keep the message to 5000 characters."),
        ({"utm_source": "u" * 201}, "utm_source", None),
    ],
)
def test_invalid_input_is_refused_next_to_its_field_and_nothing_is_stored(
    browser, admin_db, overrides, field, message
):
    email = _email("invalid")
    data = {**_form(email), **overrides}
    before = admin_db.execute(
        "SELECT (SELECT count(*) FROM lead_inquiries), (SELECT count(*) FROM email_outbox)"
    ).fetchone()
    response = browser.post("/contact", data)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Please check the fields marked below." in html
    if message:
        # The error sits inside the field's own block, after its input.
        block = re.search(
            rf'<div class="field has-error">\s*<label for="{field}".*?</div>', html, re.S
        ).group(0)
        assert message in block and 'aria-invalid="true"' in block
    assert 'value="Ada Lovelace"' in html or field == "name"  # what was typed is kept
    assert _lead(admin_db, email) is None
    after = admin_db.execute(
        "SELECT (SELECT count(*) FROM lead_inquiries), (SELECT count(*) FROM email_outbox)"
    ).fetchone()
    assert after == before


def test_the_honeypot_is_hidden_from_people_and_a_filled_one_stores_nothing(browser, admin_db):
    html = browser.get("/contact").get_data(as_text=True)
    assert re.search(r'<div class="hp" aria-hidden="true">.*name="website"[^>]*tabindex="-1"', html, re.S)
    email = _email("bot")
    response = browser.post("/contact", _form(email, website="http://spam.example"))
    assert response.status_code == 302 and response.headers["Location"].endswith("/contact/thanks")
    assert _lead(admin_db, email) is None
    assert _outbox(admin_db, email) == []


def test_repeated_submissions_for_one_address_are_limited(browser, admin_db):
    email = _email("limited")
    for i in range(5):
        assert browser.post("/contact", _form(email, message=f"try {i}")).status_code == 302
    response = browser.post("/contact", _form(email, message="one too many"))
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    html = response.get_data(as_text=True)
    assert "several requests for this email address" in html
    assert "one too many" in html  # the message is still in the form
    assert len(_inquiries(admin_db, email)) == 5


def test_many_submissions_from_one_client_address_are_limited(browser, admin_db):
    for _ in range(10):
        assert browser.post("/contact", _form(_email("flood"))).status_code == 302
    email = _email("flood")
    response = browser.post("/contact", _form(email))
    assert response.status_code == 429
    assert "Too many submissions from your network" in response.get_data(as_text=True)
    assert _lead(admin_db, email) is None
    # Another client address is not affected.
    other = browser.client.post(
        "/contact",
        data={**_form(email), "csrf_token": browser.csrf_token()},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert other.status_code == 302
    assert _lead(admin_db, email) is not None


def test_a_post_without_the_csrf_token_is_refused_and_stores_nothing(marketing_app, admin_db):
    email = _email("csrf")
    client = marketing_app.test_client()
    response = client.post("/contact", data=_form(email))
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    forged = client.post("/contact", data={**_form(email), "csrf_token": "forged"})
    assert forged.status_code == 400
    assert _lead(admin_db, email) is None


def test_marketing_role_cannot_touch_core_tables(database):
    """Least privilege: the role the contact form writes with sees marketing's tables only."""
    import psycopg

    with database.connect(Role.MARKETING, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM users")
