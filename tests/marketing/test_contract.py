"""What admin imports from marketing: composing a campaign email as subscribers get it, and the
test send that queues one copy of a stored campaign to one address."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session

from nectar.marketing import contract
from nectar.marketing.newsletter import campaigns
from nectar.shared.rejection import InputRejected


def test_compose_campaign_email_has_the_body_the_link_and_the_one_click_headers():
    url = "https://nectar.example/newsletter/unsubscribe/abc"
    email = contract.compose_campaign_email(
        "News", "Hello **you** <script>x()</script>", "a@example.com", url
    )
    assert (email.to, email.subject, email.category) == ("a@example.com", "News", "campaign")
    assert email.headers == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert "<strong>you</strong>" in email.body_html and "<script" not in email.body_html
    assert f'<a href="{url}">Unsubscribe</a>' in email.body_html
    assert email.body_text.startswith("Hello **you**") and f"Unsubscribe: {url}" in email.body_text


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (None, "BODY"),
        ("Top\n\n{{ content }}\n\nBottom", "Top\n\nBODY\n\nBottom"),
        ("Top {{content}}", "Top BODY"),
        ("Top {content} end", "Top BODY end"),
        ("No placeholder", "No placeholder\n\nBODY"),
    ],
)
def test_templates_wrap_the_campaign_body(template, expected):
    assert contract.wrap_in_template(template, "BODY") == expected


def _campaign(admin_db, subject="Launch", body="We *launched*."):
    template = admin_db.execute(
        "INSERT INTO email_templates (key, name, subject, body_markdown) VALUES (%s, 'T', 's', 'Header\n\n{{ content }}') RETURNING id",
        (f"t-{uuid.uuid4().hex[:8]}",),
    ).fetchone()[0]
    return admin_db.execute(
        "INSERT INTO campaigns (name, subject, body_markdown, template_id) VALUES ('C', %s, %s, %s) RETURNING id",
        (subject, body, template),
    ).fetchone()[0]


def test_a_test_send_queues_one_marked_copy_and_is_not_counted(
    marketing_app, marketing_engine, links, admin_db
):
    campaign = _campaign(admin_db)
    with marketing_app.app_context(), Session(marketing_engine) as session, session.begin():
        outbox_id = contract.queue_test_send(session, campaign, " Staff@Example.com ")
    subject, category, body, html, headers, campaign_id = admin_db.execute(
        "SELECT subject, category, body_text, body_html, headers, campaign_id FROM email_outbox WHERE id = %s",
        (outbox_id,),
    ).fetchone()
    assert (subject, category, campaign_id) == ("[Test] Launch", "campaign_test", None)
    assert body.startswith("Header\n\nWe *launched*.") and "<em>launched</em>" in html
    url = headers["List-Unsubscribe"].strip("<>")
    assert url.startswith("http://127.0.0.1:5001/newsletter/unsubscribe/")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Signed with the same key here, so it opens on the site.
    assert marketing_app.test_client().get(url.removeprefix("http://127.0.0.1:5001")).status_code == 200

    admin_db.execute(
        "UPDATE campaigns SET status = 'scheduled', scheduled_at = now() WHERE id = %s", (campaign,)
    )
    campaigns.dispatch_due(marketing_engine, links)
    sent_count, confirmed = admin_db.execute(
        "SELECT sent_count, (SELECT count(*) FROM newsletter_subscribers WHERE status = 'confirmed') FROM campaigns WHERE id = %s",
        (campaign,),
    ).fetchone()
    assert sent_count == confirmed


def test_a_test_send_refuses_a_bad_address_or_an_unknown_campaign(marketing_engine, admin_db):
    campaign = _campaign(admin_db)
    with Session(marketing_engine) as session:
        with pytest.raises(InputRejected):
            contract.queue_test_send(session, campaign, "not an address", secret_key="k", base_url="http://x")
        with pytest.raises(contract.CampaignNotFound):
            contract.queue_test_send(
                session, uuid.uuid4(), "a@example.com", secret_key="k", base_url="http://x"
            )
