"""Content staff write in admin and marketing publishes or sends: blog posts (Markdown, preview, drafts,
publish dates, unique slugs), email templates, and campaigns (preview, test send, schedule, send now,
cancel), checked against marketing's own blog pages and campaign worker."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine

from nectar.marketing.newsletter.campaigns import dispatch_due
from nectar.marketing.newsletter.service import Links
from nectar.shared.config import Role, Service


@pytest.fixture(scope="module")
def marketing_site(settings_for):
    from nectar.marketing.app import create_app
    from nectar.shared.database import db

    app = create_app(settings_for(Service.MARKETING))
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module")
def marketing_engine(database):
    engine = create_engine(database.url(Role.MARKETING))
    yield engine
    engine.dispose()


@pytest.fixture
def tag():
    return uuid.uuid4().hex[:10]


def one(database, sql, *params):
    with database.connect(Role.ADMIN) as conn:
        return conn.execute(sql, params).fetchone()


def post_form(**overrides):
    form = {"title": "Hello", "slug": "", "summary": "", "body_markdown": "Body", "status": "draft",
            "published_at": "", "author_name": "", "action": "save"}  # fmt: skip
    form.update(overrides)
    return form


def in_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


# Blog posts ----------------------------------------------------------------------------------------


def test_blog_post_preview_renders_safely_and_stores_nothing(database, staff_browser, audit_rows, tag):
    browser = staff_browser("support")
    before = len(audit_rows())
    markdown = (
        f"# Launch {tag}\n\nSome **bold** text.\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1))"
    )
    response = browser.post(
        "/content/posts/new", post_form(title=f"Launch {tag}", body_markdown=markdown, action="preview")
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    preview = page[page.index('aria-label="Preview"') :]
    assert f"<h1>Launch {tag}</h1>" in preview and "<strong>bold</strong>" in preview
    assert "<script>" not in preview and "javascript:" not in preview
    assert f"Launch {tag}" in page[page.index("<textarea") :]  # the form keeps what was typed
    assert one(database, "SELECT count(*) FROM blog_posts WHERE title = %s", f"Launch {tag}")[0] == 0
    assert len(audit_rows()) == before


def test_blog_post_lifecycle_reaches_the_marketing_site(
    database, staff_browser, audit_rows, marketing_site, tag
):
    browser = staff_browser("support")
    before = len(audit_rows())
    response = browser.post(
        "/content/posts/new", post_form(title=f"Spring news {tag}", body_markdown="Fresh *flowers*.")
    )
    assert response.status_code == 302
    post_id = response.headers["Location"].rsplit("/", 1)[1]
    slug = f"spring-news-{tag}"
    row = one(database, "SELECT slug, status, published_at FROM blog_posts WHERE id = %s", post_id)
    assert row == (slug, "draft", None)
    created = audit_rows()[before:]
    assert [r["action"] for r in created] == ["blog.create"] and created[0]["target"] == f"blog:{post_id}"
    assert created[0]["after"]["slug"] == slug
    assert marketing_site.get(f"/blog/{slug}").status_code == 404  # a draft is not public
    # Saving without a change records nothing.
    response = browser.post(
        f"/content/posts/{post_id}",
        post_form(title=f"Spring news {tag}", slug=slug, body_markdown="Fresh *flowers*."),
    )
    assert "Nothing changed." in response.get_data(as_text=True)
    assert len(audit_rows()) == before + 1

    # Published with a date in the future: scheduled, still hidden.
    future = datetime.now(UTC) + timedelta(days=3)
    form = post_form(title=f"Spring news {tag}", slug=slug, body_markdown="Fresh *flowers*.", status="published",
                     published_at=in_utc(future))  # fmt: skip
    assert browser.post(f"/content/posts/{post_id}", form).status_code == 302
    stored = one(database, "SELECT status, published_at FROM blog_posts WHERE id = %s", post_id)
    assert stored[0] == "published" and in_utc(stored[1]) == in_utc(future)
    assert re.search(rf"Spring news {tag}</a></td>\s*<td><code>/blog/{slug}</code></td>\s*<td><span class=\"post-state post-scheduled\">",
                     browser.get("/content/").get_data(as_text=True))  # fmt: skip
    assert marketing_site.get(f"/blog/{slug}").status_code == 404

    # Published with no date: now. Marketing shows it, rendered from the Markdown.
    form.update(published_at="")
    assert browser.post(f"/content/posts/{post_id}", form).status_code == 302
    published_at = one(database, "SELECT published_at FROM blog_posts WHERE id = %s", post_id)[0]
    assert published_at <= datetime.now(UTC)
    public = marketing_site.get(f"/blog/{slug}")
    assert public.status_code == 200 and "Fresh <em>flowers</em>." in public.get_data(as_text=True)
    # The edit form shows the stored date; saving it untouched changes nothing, seconds included.
    edit_page = browser.get(f"/content/posts/{post_id}").get_data(as_text=True)
    assert f'value="{in_utc(published_at)}"' in edit_page
    form.update(published_at=in_utc(published_at))
    assert "Nothing changed." in browser.post(f"/content/posts/{post_id}", form).get_data(as_text=True)

    updates = audit_rows()[before + 1 :]
    assert [r["action"] for r in updates] == ["blog.update", "blog.update"]
    assert updates[0]["before"] == {"status": "draft", "published_at": None}
    assert set(updates[1]["after"]) == {"published_at"}


def test_blog_slugs_are_validated_and_unique(database, staff_browser, audit_rows, tag):
    browser = staff_browser("support")
    assert (
        browser.post("/content/posts/new", post_form(title="First", slug=f"taken-{tag}")).status_code == 302
    )
    before = len(audit_rows())
    for slug, message in ((f"taken-{tag}", f"Another post already uses /taken-{tag}"),
                          ("Not A Slug!", "Use lowercase letters, digits and single dashes")):  # fmt: skip
        response = browser.post("/content/posts/new", post_form(title=f"Second {tag}", slug=slug))
        assert response.status_code == 422
        page = response.get_data(as_text=True)
        field = page[page.index('name="slug"') - 400 : page.index('name="slug"') + 600]
        assert message in field, page  # next to the slug field
    response = browser.post("/content/posts/new", post_form(title="", body_markdown=""))
    assert response.status_code == 422 and "This field is required." in response.get_data(as_text=True)
    assert one(database, "SELECT count(*) FROM blog_posts WHERE title = %s", f"Second {tag}")[0] == 0
    assert len(audit_rows()) == before
    assert browser.get(f"/content/posts/{uuid.uuid4()}").status_code == 404


# Email templates -----------------------------------------------------------------------------------


def template_form(tag, **overrides):
    form = {"key": f"news-{tag}", "name": "Newsletter", "subject": "News", "action": "save",
            "body_markdown": "# Nectar news\n\n{content}\n\n*See you soon.*"}  # fmt: skip
    form.update(overrides)
    return form


def test_email_templates(database, staff_browser, audit_rows, tag):
    browser = staff_browser("support")
    before = len(audit_rows())
    response = browser.post("/content/templates/new", template_form(tag, action="preview"))
    assert "Each campaign&#39;s own text appears here." in response.get_data(as_text=True) or \
        "Each campaign's own text appears here." in response.get_data(as_text=True)  # fmt: skip
    assert len(audit_rows()) == before

    response = browser.post("/content/templates/new", template_form(tag))
    assert response.status_code == 302
    template_id = response.headers["Location"].rsplit("/", 1)[1]
    assert one(database, "SELECT key, subject FROM email_templates WHERE id = %s", template_id) == (
        f"news-{tag}",
        "News",
    )

    for overrides, message in (
        ({"body_markdown": "No placeholder"}, "Put {content} where each campaign"),
        ({"key": f"news-{tag}"}, f"A template with the key news-{tag} exists already."),
        ({"key": "Bad Key"}, "Use lowercase letters and digits"),
    ):
        response = browser.post(
            "/content/templates/new", template_form(tag, **{"key": f"other-{tag}", **overrides})
        )
        assert response.status_code == 422 and message in response.get_data(as_text=True), overrides

    response = browser.post(f"/content/templates/{template_id}", template_form(tag, subject="Monthly news"))
    assert response.status_code == 302
    rows = audit_rows()[before:]
    assert [r["action"] for r in rows] == ["template.create", "template.update"]
    assert rows[1]["before"] == {"subject": "News"} and rows[1]["after"] == {"subject": "Monthly news"}
    assert f"news-{tag}" in browser.get("/content/templates").get_data(as_text=True)


# Campaigns -----------------------------------------------------------------------------------------


@pytest.fixture
def campaign(database, staff_browser, audit_rows, tag):
    """A draft campaign inside a template, created through the pages; returns (browser, id)."""
    browser = staff_browser("support")
    response = browser.post("/content/templates/new", template_form(tag))
    template_id = response.headers["Location"].rsplit("/", 1)[1]
    response = browser.post(
        "/content/campaigns/new",
        {"name": f"Spring {tag}", "subject": f"Spring is here {tag}", "template_id": template_id,
         "body_markdown": "Our **spring** release.", "action": "save"},  # fmt: skip
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    campaign_id = response.headers["Location"].rsplit("/", 1)[1]
    created = audit_rows()[-1]
    assert (created["action"], created["target"], created["actor"]) == (
        "campaign.create",
        f"campaign:{campaign_id}",
        browser.email,
    )
    assert created["after"]["template_id"] == template_id
    return browser, campaign_id


def campaign_row(database, campaign_id):
    return one(database, "SELECT status, scheduled_at, sent_count FROM campaigns WHERE id = %s", campaign_id)


def test_campaign_preview_shows_what_subscribers_get(database, staff_browser, campaign, tag):
    browser, campaign_id = campaign
    page = browser.get(f"/content/campaigns/{campaign_id}").get_data(as_text=True)
    preview = page[page.index('aria-label="Preview"') :]
    assert f"Spring is here {tag}" in preview
    assert "List-Unsubscribe-Post" in preview and "List-Unsubscribe=One-Click" in preview
    # The HTML sits in a sandboxed frame, escaped into its srcdoc: template around the body.
    assert 'sandbox=""' in preview
    assert "&lt;h1&gt;Nectar news&lt;/h1&gt;" in preview and "&lt;strong&gt;spring&lt;/strong&gt;" in preview
    assert (
        preview.index("Nectar news") < preview.index("spring&lt;/strong&gt;") < preview.index("See you soon")
    )

    # Previewing unsaved changes stores nothing.
    response = browser.post(
        f"/content/campaigns/{campaign_id}",
        {
            "name": "x",
            "subject": "Changed subject",
            "template_id": "",
            "body_markdown": "Changed *body*",
            "action": "preview",
        },
    )
    assert "Changed subject" in response.get_data(as_text=True)
    assert "&lt;em&gt;body&lt;/em&gt;" in response.get_data(as_text=True)
    assert (
        one(database, "SELECT subject FROM campaigns WHERE id = %s", campaign_id)[0]
        == f"Spring is here {tag}"
    )


def test_test_send_queues_exactly_one_message(database, campaign, audit_rows, tag):
    browser, campaign_id = campaign
    before = len(audit_rows())
    address = f"tester-{tag}@example.com"
    response = browser.post(f"/content/campaigns/{campaign_id}/test", {"to_address": f"  {address} "})
    assert response.status_code == 302
    with database.connect(Role.ADMIN) as conn:
        rows = conn.execute(
            "SELECT id, subject, category, status, body_text, headers FROM email_outbox WHERE to_address = %s",
            (address,),
        ).fetchall()
    assert len(rows) == 1
    message_id, subject, category, status, body, headers = rows[0]
    assert (subject, category, status) == (f"[Test] Spring is here {tag}", "campaign_test", "pending")
    assert "Nectar news" in body and "Our **spring** release." in body
    assert "List-Unsubscribe" in headers
    rows = audit_rows()[before:]
    assert [r["action"] for r in rows] == ["campaign.test_send"]
    assert rows[0]["after"] == {"to": address, "outbox_id": str(message_id)}
    assert campaign_row(database, campaign_id) == ("draft", None, 0)  # not a send

    response = browser.post(f"/content/campaigns/{campaign_id}/test", {"to_address": "not an address"})
    assert response.status_code == 422
    assert "An email address must have an @-sign." in response.get_data(as_text=True)
    assert len(audit_rows()) == before + 1
    assert browser.post(f"/content/campaigns/{uuid.uuid4()}/test", {"to_address": address}).status_code == 404


def add_subscribers(database, tag, statuses):
    with database.connect(Role.ADMIN, autocommit=True) as conn:
        for n, status in enumerate(statuses):
            conn.execute(
                "INSERT INTO newsletter_subscribers (email, status) VALUES (%s, %s)",
                (f"sub{n}-{tag}@example.com", status),
            )


def test_scheduled_campaign_is_sent_by_marketing_when_due(
    database, campaign, audit_rows, marketing_engine, tag
):
    browser, campaign_id = campaign
    add_subscribers(database, tag, ["confirmed", "confirmed", "pending", "unsubscribed"])
    before = len(audit_rows())
    links = Links("k" * 40, "http://marketing.test")

    response = browser.post(
        f"/content/campaigns/{campaign_id}/schedule", {"scheduled_at": "2001-01-01T10:00"}
    )
    assert response.status_code == 422 and "Choose a time in the future" in response.get_data(as_text=True)
    when = (datetime.now(UTC) + timedelta(hours=2)).replace(second=0, microsecond=0)
    response = browser.post(f"/content/campaigns/{campaign_id}/schedule", {"scheduled_at": in_utc(when)})
    assert response.status_code == 302
    status, scheduled_at, _ = campaign_row(database, campaign_id)
    assert (status, scheduled_at) == ("scheduled", when)  # exactly what marketing's worker reads
    rows = audit_rows()[before:]
    assert [r["action"] for r in rows] == ["campaign.schedule"]
    assert rows[0]["before"] == {"status": "draft", "scheduled_at": None}
    assert rows[0]["after"] == {"status": "scheduled", "scheduled_at": when.isoformat()}

    assert campaign_id not in {str(c) for c in dispatch_due(marketing_engine, links)}  # not due yet
    assert campaign_row(database, campaign_id)[0] == "scheduled"
    finished = dispatch_due(marketing_engine, links, now=when + timedelta(seconds=1))
    assert campaign_id in {str(c) for c in finished}
    with database.connect(Role.ADMIN) as conn:
        confirmed = conn.execute(
            "SELECT count(*) FROM newsletter_subscribers WHERE status = 'confirmed'"
        ).fetchone()[0]
        mine = conn.execute(
            "SELECT to_address FROM email_outbox WHERE campaign_id = %s AND to_address LIKE %s ORDER BY 1",
            (campaign_id, f"%-{tag}@example.com"),
        ).fetchall()
    assert campaign_row(database, campaign_id)[::2] == ("sent", confirmed)
    assert mine == [(f"sub0-{tag}@example.com",), (f"sub1-{tag}@example.com",)]
    page = browser.get(f"/content/campaigns/{campaign_id}").get_data(as_text=True)
    assert f"{confirmed:,} message" in page and "can no longer be edited" in page

    # A sent campaign cannot be edited, rescheduled or cancelled.
    for path, data in (
        (
            f"/content/campaigns/{campaign_id}",
            {"name": "n", "subject": "s", "template_id": "", "body_markdown": "b", "action": "save"},
        ),
        (f"/content/campaigns/{campaign_id}/send", {}),
        (f"/content/campaigns/{campaign_id}/cancel", {}),
    ):
        browser.post(path, data)
    assert campaign_row(database, campaign_id)[0] == "sent"
    assert len(audit_rows()) == before + 1


def test_send_now_and_cancel(database, campaign, audit_rows, marketing_engine, tag):
    browser, campaign_id = campaign
    before = len(audit_rows())
    response = browser.post(f"/content/campaigns/{campaign_id}/cancel", {}, follow_redirects=True)
    assert "only a scheduled or sending one can be cancelled" in response.get_data(as_text=True)

    assert browser.post(f"/content/campaigns/{campaign_id}/send", {}).status_code == 302
    status, scheduled_at, _ = campaign_row(database, campaign_id)
    assert status == "scheduled" and scheduled_at <= one(database, "SELECT now()")[0]
    assert browser.post(f"/content/campaigns/{campaign_id}/cancel", {}).status_code == 302
    assert campaign_row(database, campaign_id)[0] == "cancelled"
    dispatch_due(
        marketing_engine, Links("k" * 40, "http://marketing.test"), now=datetime.now(UTC) + timedelta(days=1)
    )
    assert campaign_row(database, campaign_id)[0] == "cancelled"
    assert one(database, "SELECT count(*) FROM email_outbox WHERE campaign_id = %s", campaign_id)[0] == 0
    # A campaign that is not there: a 404 page, and nothing recorded.
    missing = browser.post(f"/content/campaigns/{uuid.uuid4()}/send", {})
    assert missing.status_code == 404 and "There is nothing here." in missing.get_data(as_text=True)

    rows = audit_rows()[before:]
    assert [r["action"] for r in rows] == ["campaign.send_now", "campaign.cancel"]
    assert rows[1]["before"]["status"] == "scheduled" and rows[1]["after"] == {"status": "cancelled"}

    # A cancelled campaign can be edited and scheduled again.
    response = browser.post(
        f"/content/campaigns/{campaign_id}",
        {
            "name": f"Spring {tag}",
            "subject": "Second try",
            "template_id": "",
            "body_markdown": "Again",
            "action": "save",
        },
    )
    assert response.status_code == 302
    assert one(database, "SELECT subject, template_id FROM campaigns WHERE id = %s", campaign_id) == (
        "Second try",
        None,
    )
    assert audit_rows()[-1]["action"] == "campaign.update"


def test_a_sending_campaign_can_be_stopped(database, campaign, audit_rows):
    browser, campaign_id = campaign
    with database.connect(Role.MARKETING, autocommit=True) as conn:  # the worker has started it
        conn.execute(
            "UPDATE campaigns SET status = 'sending', started_at = now() WHERE id = %s", (campaign_id,)
        )
    page = browser.get(f"/content/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Stop sending" in page and "Send now" not in page
    assert browser.post(f"/content/campaigns/{campaign_id}/cancel", {}).status_code == 302
    assert campaign_row(database, campaign_id)[0] == "cancelled"
    assert audit_rows()[-1]["before"]["status"] == "sending"


def test_read_only_staff_cannot_write_content(database, staff_browser, campaign, audit_rows, tag):
    _, campaign_id = campaign
    post_id = one(database, "INSERT INTO blog_posts (slug, title, body_markdown) VALUES (%s, 't', 'b') RETURNING id",
                  f"ro-{tag}")[0]  # fmt: skip
    template_id = one(database, "SELECT template_id FROM campaigns WHERE id = %s", campaign_id)[0]
    reader = staff_browser("read_only")
    before = len(audit_rows())
    page = reader.get(f"/content/campaigns/{campaign_id}").get_data(as_text=True)
    assert "Send now" not in page and "Send a test" not in page
    for path, data in (
        ("/content/posts/new", post_form(title="x")),
        (f"/content/posts/{post_id}", post_form(title="x")),
        ("/content/templates/new", template_form(tag, key=f"ro-{tag}")),
        (f"/content/templates/{template_id}", template_form(tag)),
        ("/content/campaigns/new", {"name": "n", "subject": "s", "template_id": "", "body_markdown": "b"}),
        (
            f"/content/campaigns/{campaign_id}",
            {"name": "n", "subject": "s", "template_id": "", "body_markdown": "b"},
        ),
        (f"/content/campaigns/{campaign_id}/test", {"to_address": "a@example.com"}),
        (f"/content/campaigns/{campaign_id}/schedule", {"scheduled_at": "2099-01-01T10:00"}),
        (f"/content/campaigns/{campaign_id}/send", {}),
        (f"/content/campaigns/{campaign_id}/cancel", {}),
    ):
        assert reader.post(path, data).status_code == 403, path
    assert campaign_row(database, campaign_id)[0] == "draft"
    assert len(audit_rows()) == before
