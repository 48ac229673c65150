"""The public pages: titles and descriptions, the blog (published posts only, Markdown made safe),
the sitemap, the feed and robots.txt."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest

from nectar.marketing.billing.config import CONFIG_KEY

PAGES = ["/", "/features", "/blog", "/contact", "/newsletter"]


def _post(admin_db, *, status="published", published_at=None, body="Hello **world**.", title=None):
    slug = f"post-{uuid.uuid4().hex[:10]}"
    admin_db.execute(
        "INSERT INTO blog_posts (slug, title, summary, body_markdown, status, published_at, author_name) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'Ada')",
        (slug, title or f"Title {slug}", f"Summary of {slug}", body, status, published_at),
    )
    return slug


def _title(html: str) -> str:
    return re.search(r"<title>(.*?)</title>", html, re.S).group(1).strip()


def _description(html: str) -> str:
    return re.search(r'<meta name="description" content="([^"]*)"', html).group(1)


@pytest.mark.parametrize("path", PAGES)
def test_each_page_has_its_own_title_description_and_the_site_nav(browser, path):
    response = browser.get(path)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Nectar Studio" in _title(html)
    assert len(_description(html)) > 40
    for label, href in [("Features", "/features"), ("Pricing", "/pricing"), ("Blog", "/blog"),
                        ("Contact", "/contact"), ("Newsletter", "/newsletter")]:  # fmt: skip
        assert f'<a href="{href}">{label}</a>' in html
    # Signing in and starting free happen in core, at its public address.
    core = browser.app.config[CONFIG_KEY].core_public_url
    assert f'<a href="{core}/login">Sign in</a>' in html
    assert f'<a class="button" href="{core}/signup">Start free</a>' in html
    # The CSP forbids inline code; nothing is loaded from elsewhere, and core is the only other site linked.
    assert "<script" not in html and "style=" not in html
    assert not re.search(r'(src|<link[^>]*href)="(https?:)?//', html)
    elsewhere = set(re.findall(r'href="(https?://[^"/]+)', html)) - {core}
    assert not elsewhere and "https://" not in html
    assert 'name="viewport"' in html


def test_titles_and_descriptions_differ_between_pages(browser):
    pages = [browser.get(path).get_data(as_text=True) for path in PAGES]
    assert len({_title(page) for page in pages}) == len(PAGES)
    assert len({_description(page) for page in pages}) == len(PAGES)


def test_published_post_is_listed_and_rendered_safely(browser, admin_db):
    body = "## Section\n\nSome *text* and [a link](https://example.com).\n\n<script>alert(1)</script>\n\n[bad](javascript:alert(2)) <img src=x onerror=alert(3)>"
    slug = _post(admin_db, published_at=datetime.now(UTC) - timedelta(hours=1), body=body)
    index = browser.get("/blog").get_data(as_text=True)
    assert f'href="/blog/{slug}"' in index
    response = browser.get(f"/blog/{slug}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f"<title>Title {slug} · Nectar Studio blog</title>" in html
    assert f'content="Summary of {slug}"' in html
    assert "<h2>Section</h2>" in html and "<em>text</em>" in html
    assert '<a href="https://example.com" rel="noopener noreferrer">a link</a>' in html
    assert "<script" not in html and "alert(1)" not in html
    assert "javascript:" not in html and "onerror" not in html


def test_drafts_and_future_posts_are_not_public(browser, admin_db):
    draft = _post(admin_db, status="draft", published_at=datetime.now(UTC) - timedelta(days=1))
    future = _post(admin_db, published_at=datetime.now(UTC) + timedelta(days=1))
    undated = _post(admin_db, published_at=None)
    index = browser.get("/blog").get_data(as_text=True)
    for slug in (draft, future, undated):
        response = browser.get(f"/blog/{slug}")
        assert response.status_code == 404
        assert "There is no published post at this address." in response.get_data(as_text=True)
        assert slug not in index
    assert browser.get("/blog/no-such-post").status_code == 404


def test_a_post_appears_when_its_date_comes(browser, admin_db):
    slug = _post(admin_db, published_at=datetime.now(UTC) + timedelta(days=1))
    assert browser.get(f"/blog/{slug}").status_code == 404
    admin_db.execute(
        "UPDATE blog_posts SET published_at = now() - interval '1 second' WHERE slug = %s", (slug,)
    )
    assert browser.get(f"/blog/{slug}").status_code == 200


def test_sitemap_lists_every_page_and_only_published_posts(browser, admin_db, marketing_app):
    published = _post(admin_db, published_at=datetime.now(UTC) - timedelta(minutes=5))
    draft = _post(admin_db, status="draft")
    future = _post(admin_db, published_at=datetime.now(UTC) + timedelta(days=3))
    response = browser.get("/sitemap.xml")
    assert response.status_code == 200 and response.mimetype == "application/xml"
    tree = ElementTree.fromstring(response.data)  # noqa: S314 - our own answer
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locations = [loc.text for loc in tree.findall("s:url/s:loc", ns)]
    base = marketing_app.config["NECTAR_SETTINGS"].public_url
    for path in [*PAGES, "/pricing"]:
        assert base + path in locations
    assert f"{base}/blog/{published}" in locations
    assert not any(draft in loc or future in loc for loc in locations)


def test_robots_allows_the_site_points_at_the_sitemap_and_keeps_personal_links_out(browser, marketing_app):
    response = browser.get("/robots.txt")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    base = marketing_app.config["NECTAR_SETTINGS"].public_url
    assert "User-agent: *" in text and "Allow: /" in text
    assert f"Sitemap: {base}/sitemap.xml" in text
    assert "Disallow: /newsletter/confirm/" in text and "Disallow: /newsletter/unsubscribe/" in text


def test_feed_has_published_posts_only(browser, admin_db):
    published = _post(
        admin_db,
        published_at=datetime.now(UTC) - timedelta(minutes=1),
        body="<b>bold</b> <script>x()</script>",
    )
    draft = _post(admin_db, status="draft")
    response = browser.get("/blog/feed.xml")
    assert response.status_code == 200 and response.mimetype == "application/atom+xml"
    tree = ElementTree.fromstring(response.data)  # noqa: S314 - our own answer
    ns = {"a": "http://www.w3.org/2005/Atom"}
    ids = [entry.findtext("a:id", namespaces=ns) for entry in tree.findall("a:entry", ns)]
    assert any(i.endswith(f"/blog/{published}") for i in ids)
    assert not any(draft in i for i in ids)
    content = next(
        e.findtext("a:content", namespaces=ns)
        for e in tree.findall("a:entry", ns)
        if e.findtext("a:id", namespaces=ns).endswith(published)
    )
    assert "<b>bold</b>" in content and "<script" not in content


def test_blog_pages_through_older_posts(browser, admin_db):
    now = datetime.now(UTC)
    slugs = [_post(admin_db, published_at=now - timedelta(days=400 + i)) for i in range(12)]
    listing = browser.get("/blog").get_data(as_text=True)
    pages = int(re.search(r"Page 1 of (\d+)", listing).group(1))
    last = browser.get(f"/blog?page={pages}").get_data(as_text=True)
    assert slugs[-1] in last  # the oldest is on the last page
    assert browser.get("/blog?page=9999").status_code == 200  # past the end shows the last page
