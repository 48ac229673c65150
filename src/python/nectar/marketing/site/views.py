"""The public pages: landing, features, the blog, and what search engines read (sitemap, robots)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, abort, render_template, request

from nectar.marketing.contract.campaigns import UNSUBSCRIBE_PATH
from nectar.marketing.links import (
    CONFIRM_PATH,
    core_sign_in_url,
    core_sign_up_url,
    pricing_url,
    public_base_url,
)
from nectar.marketing.newsletter.forms import NewsletterForm
from nectar.marketing.site import service
from nectar.shared.database import db
from nectar.shared.web import external_url

site = Blueprint("site", __name__)


@site.app_context_processor
def _site_links():
    return {"pricing_url": pricing_url, "sign_in_url": core_sign_in_url, "sign_up_url": core_sign_up_url}


@site.get("/")
def landing():
    return render_template(
        "marketing/site/landing.html",
        posts=service.latest_posts(db.session, 3),
        newsletter_form=NewsletterForm(source="landing"),
    )


@site.get("/features")
def features():
    return render_template("marketing/site/features.html")


@site.get("/blog")
def blog():
    page = request.args.get("page", 1, type=int)
    return render_template(
        "marketing/site/blog.html",
        listing=service.published_posts(db.session, page),
        newsletter_form=NewsletterForm(source="blog"),
    )


@site.get("/blog/<slug>")
def post(slug: str):
    found = service.published_post(db.session, slug)
    if found is None:
        abort(404, "There is no published post at this address.")
    return render_template(
        "marketing/site/post.html",
        post=found,
        body=service.post_html(found),
        newsletter_form=NewsletterForm(source=f"blog:{slug}"[:100]),
    )


@site.get("/blog/feed.xml")
def feed():
    posts = service.latest_posts(db.session, 20)
    body = render_template(
        "marketing/site/feed.xml",
        posts=posts,
        updated=posts[0].published_at if posts else datetime(2026, 1, 1, tzinfo=UTC),
        base_url=public_base_url(),
        render=service.post_html,
    )
    return Response(body, mimetype="application/atom+xml")


SITEMAP_PAGES = (
    "site.landing",
    "site.features",
    "billing.pricing",
    "site.blog",
    "leads.contact",
    "newsletter.signup",
)


@site.get("/sitemap.xml")
def sitemap():
    body = render_template(
        "marketing/site/sitemap.xml",
        pages=[external_url(endpoint) for endpoint in SITEMAP_PAGES],
        posts=service.all_published_posts(db.session),
        base_url=public_base_url(),
    )
    return Response(body, mimetype="application/xml")


@site.get("/robots.txt")
def robots():
    lines = [
        "User-agent: *",
        "Allow: /",
        # Personal links from emails: nothing for an index, and a crawler must never act on them.
        f"Disallow: {CONFIRM_PATH}",
        f"Disallow: {UNSUBSCRIBE_PATH}",
        f"Sitemap: {external_url('site.sitemap')}",
    ]
    return Response("\n".join(lines) + "\n", mimetype="text/plain")
